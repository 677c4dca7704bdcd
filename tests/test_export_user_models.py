"""Exports of models that are not the demo: inputs outside [0, 1], found from the data or stated,
every export checked against the Keras model, the export commands on the user's data, and the
errors a new user meets on the way (each leaves nothing behind)."""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import fpga_export
import tflite_export
import uniq_tf
from fpga_export import check
from fpga_export import cli as finn_cli
from fpga_export import export as finn_export
from tflite_export import cli as tflite_cli
from uniq_tf._keras import keras

L = keras.layers
pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")


def _quantized(model, x, y, epochs: int = 6):
    """``model`` trained in float on (x, y), then UNIQ W4A8, calibrated on x and put in its
    fully quantized modes (a model as a user would export it)."""
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    q = uniq_tf.quantize_model(model, 4, 8)
    uniq_tf.calibrate_activations(q, x[:256], verbose=False)
    uniq_tf.set_weight_mode(q, uniq_tf.Mode.QUANTIZED)
    return q


@pytest.fixture(scope="module")
def standardized():
    """The digits CNN trained on standardized inputs ((x - mean) / std, about [-0.8, 1.9])."""
    x_train, y_train, x_test, y_test = uniq_tf.data.load_digits()
    mean, std = x_train.mean(), x_train.std()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    q = _quantized(uniq_tf.models.small_cnn((8, 8, 1), 10), x_train, y_train)
    return q, x_train, x_test, y_test


@pytest.fixture(scope="module")
def signed_rgb():
    """A 32x32x3 CNN on inputs in [-1, 1] (MobileNet's preprocessing), with something to
    learn: the label is the brightest of the image's four quadrants."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (600, 32, 32, 3)).astype(np.float32)
    quadrants = x.reshape(600, 2, 16, 2, 16, 3).mean(axis=(2, 4, 5)).reshape(600, 4)
    y = quadrants.argmax(-1).astype(np.int32)
    inputs = keras.Input((32, 32, 3))
    h = L.ReLU(name="r1")(L.Conv2D(8, 3, strides=2, padding="same", name="c1")(inputs))
    h = L.ReLU(name="r2")(L.Conv2D(8, 3, strides=2, padding="same", name="c2")(h))
    model = keras.Model(inputs, L.Dense(4, name="fc")(L.GlobalAveragePooling2D()(h)))
    q = _quantized(model, x[:400], y[:400], epochs=8)
    return q, x[:400], x[400:], y[400:]


def _bundle_parity(bundle_dir, q, x) -> dict:
    """The bundle run in qonnx against the quantized Keras model on raw inputs."""
    exported = check.predict(bundle_dir, x)
    reference = q.predict(x, verbose=0)
    diff = np.abs(exported - reference).max()
    return {"agreement": float(np.mean(exported.argmax(-1) == reference.argmax(-1))),
            "max_abs_diff": float(diff), "range": float(np.ptp(reference))}


@pytest.mark.parametrize("fixture", ["standardized", "signed_rgb"])
def test_the_input_quantizer_comes_from_the_data_and_the_bundle_matches_keras(
        fixture, request, tmp_path):
    q, x_train, x_test, _ = request.getfixturevalue(fixture)
    result = fpga_export.export_finn(q, tmp_path / "b", data=x_train, check_data=x_test)
    quant = result.descriptor["input"]["quant"]
    assert quant["signed"] and quant["min"] <= x_train.min() and quant["max"] >= x_train.max()
    assert result.descriptor["input"]["how"].startswith("from the data's range")
    record = result.descriptor["check"]
    assert record["status"] == "passed" and record["samples"] == min(len(x_test), 256)
    assert record["keras"]["clear_agreement"] >= 0.99
    assert record["keras"]["outliers"] <= 0.01
    parity = _bundle_parity(tmp_path / "b", q, x_test)
    assert parity["agreement"] >= 0.99
    assert parity["max_abs_diff"] <= record["keras"]["tolerance"]
    readme = (tmp_path / "b" / "README.md").read_text()
    assert "**Checked** (passed)" in readme and f"{quant['scale']:.6g}" in readme


def test_a_stated_range_is_used_and_data_outside_it_is_an_error(signed_rgb, tmp_path):
    q, x_train, x_test, _ = signed_rgb
    result = fpga_export.export_finn(q, tmp_path / "b", input_range=(-1, 1))
    quant = result.descriptor["input"]["quant"]
    assert (quant["signed"], quant["bits"], quant["scale"]) == (True, 8, pytest.approx(1 / 127))
    assert result.descriptor["check"]["inputs"].endswith("uniform in the input range [-1, 1]")
    with pytest.raises(ValueError, match=r"data lie in \[-0.99.*, 1\], outside the stated input "
                                         r"range \[0, 1\]"):
        fpga_export.export_finn(q, tmp_path / "c", data=x_train, input_range=(0, 1))
    assert not (tmp_path / "c").exists()


def test_without_data_or_a_range_the_export_refuses_instead_of_guessing(standardized, tmp_path):
    q, *_ = standardized
    with pytest.raises(ValueError, match="needs the input's range: pass data="):
        fpga_export.export_finn(q, tmp_path / "b")
    assert os.listdir(tmp_path) == []


def test_a_corrupted_export_fails_its_check_and_leaves_no_bundle(standardized, tmp_path,
                                                                  monkeypatch):
    q, x_train, x_test, _ = standardized
    write = finn_export._write_model

    def write_and_break_one_weight(tmp, wrapper, graph):
        write(tmp, wrapper, graph)
        model = onnx.load(str(tmp / "model.onnx"))
        last = graph.layers[-1]  # the classifier: one weight of its integer grid
        node = next(n for n in model.graph.node if n.name == last.onnx_node)
        quant = next(n for n in model.graph.node if node.input[1] in n.output)
        tensor = next(t for t in model.graph.initializer if t.name == quant.input[0])
        values = numpy_helper.to_array(tensor).copy()
        row, col = np.unravel_index(np.abs(values).argmax(), values.shape)
        values[row, col] = -values[row, col]
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        onnx.save(model, str(tmp / "model.onnx"))

    monkeypatch.setattr(finn_export, "_write_model", write_and_break_one_weight)
    with pytest.raises(check.CheckError, match="model.onnx differs from the Keras model with"):
        fpga_export.export_finn(q, tmp_path / "b", data=x_train, check_data=x_test)
    assert os.listdir(tmp_path) == []  # no bundle, no temporary directory
    monkeypatch.setattr(finn_export, "_write_model", write)
    unchecked = fpga_export.export_finn(q, tmp_path / "u", data=x_train, check=False)
    assert unchecked.descriptor["check"] == {"status": "unchecked"}
    assert "**Unchecked**" in (tmp_path / "u" / "README.md").read_text()


def test_the_tflite_export_checks_on_inputs_inside_the_stated_range(signed_rgb, tmp_path):
    q, *_ = signed_rgb
    report = tflite_export.export_tflite(q, tmp_path / "m.tflite", input_range=(-1, 1))
    assert report.samples_source.endswith("uniform in [-1, 1] (input_range)")
    assert "uniform in [-1, 1]" in report.summary()
    unchecked = tflite_export.export_tflite(q, tmp_path / "u.tflite", check=False)
    assert not unchecked.checked and "unchecked" in unchecked.summary()


# ------------------------------------------------------------------ the commands


@pytest.fixture(scope="module")
def saved(standardized, signed_rgb, tmp_path_factory):
    """Both models saved as a user would, with their inputs in .npz files."""
    folder = tmp_path_factory.mktemp("saved")
    for name, (q, _, x_test, y_test) in (("standardized", standardized),
                                          ("signed_rgb", signed_rgb)):
        q.save(folder / f"{name}.h5")
        np.savez(folder / f"{name}.npz", x=x_test, y=y_test)
    return folder


@pytest.mark.parametrize("name", ["standardized", "signed_rgb"])
def test_both_commands_take_the_users_inputs(saved, name, tmp_path):
    model, inputs = str(saved / f"{name}.h5"), str(saved / f"{name}.npz")
    finn = finn_cli.run(model, str(tmp_path / "fpga"), inputs, verbose=False)
    assert finn["check"]["status"] == "passed"
    assert finn["check"]["keras"]["clear_agreement"] >= 0.99
    accuracy = finn["test_accuracy"]
    assert abs(accuracy["exported_onnx"] - accuracy["keras_quantized"]) <= 0.01
    on_disk = json.loads((tmp_path / "fpga" / "summary.json").read_text())
    assert on_disk["check"]["keras"]["max_abs_diff"] == finn["check"]["keras"]["max_abs_diff"]
    tflite = tflite_cli.run(model, str(tmp_path / "tflite"), inputs, verbose=False)
    assert tflite["top1_agreement"]["float"] >= 0.99
    assert abs(tflite["test_accuracy"]["tflite_int8"]
               - tflite["test_accuracy"]["keras_quantized"]) <= 0.02


def test_dataset_none_needs_an_input_range_and_checks_inside_it(saved, tmp_path):
    model = str(saved / "signed_rgb.h5")
    for run in (finn_cli.run, tflite_cli.run):
        with pytest.raises(ValueError, match="--dataset=none .* pass --input_range=lo,hi"):
            run(model, str(tmp_path / "x"), "none", verbose=False)
    assert not (tmp_path / "x").exists()
    finn = finn_cli.run(model, str(tmp_path / "fpga"), "none", input_range="-1,1",
                        verbose=False)
    assert finn["check"]["inputs"].endswith("uniform in the input range [-1, 1]")
    assert finn["input_quantizer"]["signed"]
    tflite = tflite_cli.run(model, str(tmp_path / "tflite"), "none", input_range="-1,1",
                            verbose=False)
    assert "uniform in [-1, 1]" in tflite["checked_on"]


def test_a_model_that_does_not_fit_the_data_is_refused_before_anything_is_written(saved,
                                                                                  tmp_path):
    model = str(saved / "signed_rgb.h5")
    for run in (finn_cli.run, tflite_cli.run):
        with pytest.raises(ValueError, match=r"The model takes inputs \(32, 32, 3\), "
                                             r"--dataset=digits gives \(8, 8, 1\)"):
            run(model, str(tmp_path / "out"), "digits", verbose=False)
    assert not (tmp_path / "out").exists()


def test_an_output_directory_under_a_file_is_a_one_line_error(saved, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for module in (finn_cli, tflite_cli):
        with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
            module.run(str(saved / "standardized.h5"), str(a_file / "out"),
                       str(saved / "standardized.npz"), verbose=False)
    assert a_file.read_text() == "mine"


# ------------------------------------------------------------------ TFMOT's entry point


def test_tfmot_quantize_apply_on_a_nested_model_fails_as_tfmots_own_scheme_does():
    import tensorflow_model_optimization as tfmot

    inner_in = keras.Input((8, 8, 1))
    inner = keras.Model(inner_in, L.ReLU()(L.Conv2D(4, 3, name="inner_conv")(inner_in)))
    outer_in = keras.Input((8, 8, 1))
    outer = keras.Model(outer_in, L.Dense(3, name="head")(L.Flatten()(inner(outer_in))))
    annotated = uniq_tf.quantize_annotate_model(outer)
    with pytest.raises(ValueError, match="Quantizing a keras Model inside another keras Model "
                                         "is not supported"):
        tfmot.quantization.keras.quantize_apply(annotated, scheme=uniq_tf.UniqScheme())
    assert uniq_tf.is_quantized_model(uniq_tf.quantize_apply(annotated))  # ours enters it


# ------------------------------------------------------------------ end to end on tfds data


@pytest.mark.slow
def test_a_tfds_run_at_32x32x3_in_minus_one_to_one_exports_through_both_commands(tmp_path):
    """uniq-train on (mock) CIFAR-10 at 32x32x3 with [-1, 1] preprocessing, then both export
    commands on that run with the same --dataset: they read the run's preprocessing, derive the
    input quantizer from the data and pass their checks."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from uniq_tf.cli import train

    data_dir = str(tmp_path / "tfds")
    config = train.TrainConfig(
        model="small_cnn", dataset="cifar10", data_dir=data_dir, normalization="tf",
        batch_size=8, float_epochs=1, stages=2, epochs_per_stage=1, final_epochs=0,
        max_steps_per_epoch=4, calibration_steps=2, output_dir=str(tmp_path / "run"),
        verbose=0)
    with tfds.testing.mock_data(num_examples=24):
        summary = train.run(config)
        model = str(tmp_path / "run" / "quantized_model.h5")
        finn = finn_cli.run(model, str(tmp_path / "fpga"), "cifar10", data_dir=data_dir,
                            verbose=False)
        tflite = tflite_cli.run(model, str(tmp_path / "tflite"), "cifar10", data_dir=data_dir,
                                verbose=False)
    assert summary["preprocessing"] == {"dataset": "cifar10", "image_size": 32,
                                        "normalization": "tf"}
    quant = finn["input_quantizer"]
    assert quant["signed"] and quant["min"] < -0.9 and quant["max"] > 0.9  # [-1, 1] data
    assert quant["how"].startswith("from the data's range")
    assert finn["check"]["status"] == "passed" and finn["data"].startswith("cifar10 (tf")
    assert tflite["data"] == finn["data"]
    assert set(tflite["max_abs_diff"]) == {"float", "int8"}  # both files checked and written
    assert all(value is not None for value in tflite["max_abs_diff"].values())
