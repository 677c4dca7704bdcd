"""uniq-train end to end (in-process run()), on digits and on tfds mock data, and its
checks of bad flags, each of which must fail before any training starts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import uniq_tf
from uniq_tf import data
from uniq_tf._keras import keras
from uniq_tf.cli import train
from uniq_tf.training import pipeline

ROOT = Path(__file__).resolve().parents[1]

OUTPUT_FILES = {"float_model.h5", "quantized_model.h5", "best_quantized_model.h5",
                "history.json", "summary.json", "bops.txt"}


def config(tmp_path, **overrides) -> train.TrainConfig:
    """A short schedule: 2 stages of 1 epoch, 1 final epoch."""
    fields = dict(float_epochs=5, stages=2, epochs_per_stage=1, final_epochs=1,
                  calibration_steps=3, output_dir=str(tmp_path / "out"), verbose=0)
    fields.update(overrides)
    return train.TrainConfig(**fields)


@pytest.mark.slow
def test_digits_end_to_end(tmp_path):
    cfg = config(tmp_path)
    summary = train.run(cfg)
    assert set(os.listdir(cfg.output_dir)) == OUTPUT_FILES  # and no temporary files left
    assert summary == json.loads((tmp_path / "out" / "summary.json").read_text())
    # small_cnn learns digits in 5 short epochs and quantizes well at 4 bits.
    assert summary["float_accuracy"] >= 0.95
    assert summary["quantized_accuracy_before_uniq"] >= summary["float_accuracy"] - 0.05
    assert summary["quantized_accuracy"] >= summary["float_accuracy"] - 0.03
    assert summary["stages"] == [["conv1", "conv2"], ["conv3", "fc"]]
    assert summary["uniq_stage_per_epoch"] == [0, 1, 2]
    assert summary["epochs"]["uniq_total"] == 3
    assert {k: v["distinct_values"] for k, v in summary["codebooks"].items()} == {
        "conv1": 16, "conv2": 16, "conv3": 16, "fc": 16}
    assert all(r["bits"] == 8 for r in summary["activation_ranges"].values())
    bops = summary["bops"]
    assert bops["macs"] > 0 and bops["quantized_bops_simple"] == bops["macs"] * 4 * 8
    assert bops["float_over_quantized_bops"] > 10  # 32x32-bit float vs 4x8-bit
    # The per-layer BOPs: uniq_tf.summary's rows in summary.json, its table in bops.txt.
    layers = {row["name"]: row for row in summary["bops_layers"]}
    assert sum(row["macs"] for row in layers.values()) == bops["macs"]
    assert (layers["conv1"]["weight_bits"], layers["conv1"]["codebook_size"]) == (4, 16)
    table = (tmp_path / "out" / "bops.txt").read_text()
    assert table.splitlines()[0].startswith("BOPs summary of 'small_cnn'")
    assert all(re.search(rf"^{name} ", table, re.M) for name in ("conv1", "conv2", "conv3", "fc"))
    assert summary["strategy"] == {"name": "default", "replicas": 1}
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert len(history["float"]["loss"]) == 5 and history["uniq"]["uniq_stage"] == [0, 1, 2]
    # The best epoch by validation accuracy among those evaluated fully quantized (stage 1 on,
    # i.e. epochs 2 and 3), saved as best_quantized_model.h5.
    val_accuracy = history["uniq"]["val_accuracy"]
    assert summary["best"]["val_accuracy"] == max(val_accuracy[1:])
    assert val_accuracy[summary["best"]["epoch"] - 1] == summary["best"]["val_accuracy"]
    assert summary["best"]["epoch"] in (2, 3)

    # The saved quantized model loads under quantize_scope and scores what the run reported.
    _, _, x_te, y_te = data.load_digits()
    with uniq_tf.quantize_scope():
        loaded = keras.models.load_model(tmp_path / "out" / "quantized_model.h5", compile=False)
    accuracy = np.mean(np.argmax(loaded.predict(x_te, verbose=0), axis=1) == y_te)
    assert accuracy == pytest.approx(summary["quantized_accuracy"], abs=1e-6)
    assert set(uniq_tf.weight_modes(loaded).values()) == {uniq_tf.Mode.QUANTIZED}
    floats = keras.models.load_model(tmp_path / "out" / "float_model.h5", compile=False)
    accuracy = np.mean(np.argmax(floats.predict(x_te, verbose=0), axis=1) == y_te)
    assert accuracy == pytest.approx(summary["float_accuracy"], abs=1e-6)

    # --pretrained with no float epochs starts UNIQ from the saved float model.
    again = train.run(config(tmp_path, pretrained=str(tmp_path / "out" / "float_model.h5"),
                             float_epochs=0, stages=1, final_epochs=0,
                             output_dir=str(tmp_path / "again")))
    assert again["float_accuracy"] == summary["float_accuracy"]
    assert again["uniq_stage_per_epoch"] == [0]


@pytest.mark.slow
def test_reference_preset_with_clipped_noise_and_polish(tmp_path, monkeypatch):
    compiled = []
    real_compile = pipeline.compile_model

    def spy(cfg, model, rate, total_steps, final_steps=0):
        real_compile(cfg, model, rate, total_steps, final_steps)
        compiled.append(model.optimizer)

    monkeypatch.setattr(pipeline, "compile_model", spy)
    summary = train.run(config(tmp_path, float_epochs=2, epochs_per_stage=2, preset="reference",
                               noise="clipped", polish_epochs=1, max_steps_per_epoch=4))
    # First stage twice as long (4 epochs), then 2, then 1 final: 7 epochs.
    assert summary["uniq_stage_per_epoch"] == [0, 0, 0, 0, 1, 1, 2]
    assert summary["epochs"]["first_stage"] == 4 and summary["epochs"]["polish"] == 1
    optimizer = compiled[-1]
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == 0.9 and optimizer.weight_decay == pytest.approx(5e-4)
    # The step schedule ends at a tenth of the preset's rate (cosine would end near 0).
    assert float(optimizer.learning_rate) == pytest.approx(3e-3)
    with uniq_tf.quantize_scope():
        loaded = keras.models.load_model(tmp_path / "out" / "quantized_model.h5", compile=False)
    from uniq_tf.integration.inspection import kernel_wrappers, weight_quantizers

    assert {q.noise for w in kernel_wrappers(loaded) for _, q, _ in weight_quantizers(w)} == {
        "clipped"}


@pytest.mark.slow
def test_mixed_precision_and_xla_flags_train_end_to_end(tmp_path):
    summary = train.run(config(tmp_path, float_epochs=2, mixed_precision="mixed_bfloat16",
                               jit_compile=True, max_steps_per_epoch=4))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    assert 0.0 <= summary["quantized_accuracy"] <= 1.0
    with uniq_tf.quantize_scope():
        loaded = keras.models.load_model(tmp_path / "out" / "quantized_model.h5", compile=False)
    assert loaded.get_layer("conv1").layer.compute_dtype == "bfloat16"
    assert {len(np.unique(c.levels)) for c in uniq_tf.get_codebooks(loaded).values()} == {16}


@pytest.mark.slow
@pytest.mark.parametrize(
    "dataset, stages, expected_stages",
    [("cifar10", "layer", 4), ("imagenette", "conv1,conv2;conv3,fc", 2)],
)
def test_tfds_data_sets_end_to_end_on_mock_data(tmp_path, dataset, stages, expected_stages):
    cfg = config(tmp_path, dataset=dataset, data_dir=str(tmp_path / "tfds"), image_size=8,
                 batch_size=4, float_epochs=1, stages=stages, final_epochs=0,
                 weight_bits=3, layer_bits="conv1=8:8,fc=8:")
    with tfds.testing.mock_data(num_examples=8):
        summary = train.run(cfg)
    assert summary["input_shape"] == [8, 8, 3] and summary["num_classes"] == 10
    assert len(summary["stages"]) == expected_stages
    assert summary["uniq_stage_per_epoch"] == list(range(expected_stages))
    assert summary["layer_bits"] == {"conv1": [8, 8], "fc": [8, None]}
    sizes = {k: v["codebook_size"] for k, v in summary["codebooks"].items()}
    assert sizes == {"conv1": 256, "conv2": 8, "conv3": 8, "fc": 256}
    assert summary["activation_ranges"]["relu1"]["bits"] == 8
    assert summary["activation_ranges"]["relu2"]["bits"] == 8  # the default activation bits
    assert set(os.listdir(cfg.output_dir)) == OUTPUT_FILES


BAD_FLAGS = [
    ({"model": "resnet19"}, r"model must be one of \[.*'small_cnn'.*\], got 'resnet19'"),
    ({"dataset": "mnist"}, r"dataset must be one of \['digits'.*got 'mnist'"),
    ({"float_epochs": -1}, r"float_epochs must be an integer >= 0, got -1"),
    ({"final_epochs": -2}, r"final_epochs must be an integer >= 0, got -2"),
    ({"epochs_per_stage": 0}, r"epochs_per_stage must be an integer >= 1"),
    ({"weight_bits": 0}, r"weight_bits must be an integer in 1..16, got 0"),
    ({"weight_bits": 17}, r"weight_bits must be an integer in 1..16, got 17"),
    ({"activation_bits": 1}, r"activation_bits must be an integer in 2..16, got 1"),
    ({"optimizer": "rmsprop"}, r"optimizer must be one of \['sgd', 'adam'\], got 'rmsprop'"),
    ({"strategy": "tpu"},
     r"strategy must be one of \['default', 'mirrored', 'multi_worker'\], got 'tpu'"),
    ({"learning_rate": 0.0}, r"learning_rate must be > 0"),
    ({"layer_bits": "conv1=8"}, r"layer_bits entry 'conv1=8' must look like name=w"),
    ({"layer_bits": "conv9=8:8"}, r"Unknown layer names \['conv9'\]"),
    ({"layer_bits": "conv1=20:8"}, r"layer_bits\['conv1'\]\[0\] must be an integer in 1..16"),
    ({"skip_layers": "conv1,nope"}, r"Unknown layer names \['nope'\]"),
    ({"stages": "5"}, r"stages=5 is more than the 4 quantized kernel layers"),
    ({"stages": 0}, r"stages \(number of stages\) must be an integer >= 1"),
    ({"stages": "conv1,conv2;conv3"}, r"stages leave out the quantized kernel layers \['fc'\]"),
    ({"stages": "conv1;relu1"}, r"stages name \['relu1'\], which are not quantized kernel"),
    ({"pretrained": "imagenet"}, r'pretrained="imagenet" is available for'),
    ({"noise": "wide"}, r"noise must be one of \['paper', 'clipped', 'bin_matched'\], got 'wide'"),
    ({"mixed_precision": "float16"}, r"mixed_precision must be one of .*, got 'float16'"),
    ({"preset": "fast"}, r"preset must be one of \['', 'reference'\], got 'fast'"),
    ({"polish_epochs": 1}, r"polish_epochs must be less than every stage's length \(1\)"),
    ({"pretrained": "/no/such/weights.h5"}, r"pretrained weights file .* does not exist"),
    ({"dataset": "cifar10", "data_dir": "EMPTY"}, r"No prepared 'cifar10' data .*tfds build"),
]


@pytest.mark.parametrize("overrides, message", BAD_FLAGS)
def test_bad_flags_fail_before_training(tmp_path, monkeypatch, overrides, message):
    def no_training(*args, **kwargs):
        raise AssertionError("training started before the flags were checked")

    monkeypatch.setattr(pipeline, "fit_model", no_training)
    if overrides.get("data_dir") == "EMPTY":
        overrides = {**overrides, "data_dir": str(tmp_path / "empty")}
    cfg = config(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message):
        train.run(cfg)
    assert not os.path.exists(cfg.output_dir)


@pytest.mark.slow
def test_command_line_reports_a_bad_flag_as_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "uniq_tf.cli.train", "--stages=9",
         f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode != 0
    assert "stages=9 is more than the 4 quantized kernel layers" in result.stderr
    assert not (tmp_path / "out").exists()
