"""Deployment: file sizes and LiteRT latency of a UNIQ model exported to TFLite.

For each model, a UNIQ model is trained with uniq-train's ``run`` (the demo's
pipeline), then exported with ``tflite_export``: float TFLite (codebook weights), full-integer
int8 TFLite and the packed b-bit format. Reported:

- sizes, raw and gzipped (``tflite_export.size_report``): float32 weights, float TFLite, int8
  TFLite, packed; int8 / float TFLite, and the packed file's bytes on disk over b/32 of the
  float32 weight bytes (``PackedReport.file_ratio``: 1 would be b bits per weight and nothing
  else);
- latency: one LiteRT interpreter per file (1 thread, batch 1, default delegates), invoked in
  interleaved rounds (``bench.common.interleaved_times``); median per file, int8 / float.

Models: the digits demo (small_cnn, 8x8x1) and ResNet-20 at 32x32 (digits resized to 32x32,
one channel: CIFAR-sized feature maps, trained weights, no download). Sizes only, untrained:
ResNet-18 (11.7M parameters), to show how the fixed per-channel overhead of an int8 file
shrinks relative to the weights as models grow.

    .venv/bin/python -m bench.deploy --quick --output_dir=outputs/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np

import tflite_export
import uniq_tf
from bench import common
from tflite_export import runtime
from uniq_tf.cli import train as example
from uniq_tf.zoo import data, models


@dataclasses.dataclass
class DeployModel:
    """A model to train and export: uniq-train settings."""

    name: str
    model: str
    image_size: int | None
    float_epochs: int
    stages: str | int
    epochs_per_stage: int
    final_epochs: int


@dataclasses.dataclass
class SizeOnlyModel:
    """A model exported untrained (quantized, ranges calibrated on random inputs) for sizes."""

    name: str
    model: str
    input_shape: tuple
    num_classes: int


@dataclasses.dataclass
class DeployConfig:
    models: tuple = (
        DeployModel("small_cnn (digits demo, 8x8x1)", "small_cnn", None, 15, "layer", 2, 2),
        DeployModel("resnet20 (32x32x1)", "resnet20", 32, 6, 4, 1, 1),
    )
    size_only: tuple = (SizeOnlyModel("resnet18 (untrained, sizes only)", "resnet18",
                                      (64, 64, 3), 1000),)
    weight_bits: int = 4
    activation_bits: int = 8
    threads: int = 1
    rounds: int = 20
    calls_per_round: int = 25
    warmup_calls: int = 20
    calibration_samples: int = 500


def train_uniq(spec: DeployModel, config: DeployConfig, folder: str):
    """(UNIQ model, training inputs as numpy) via uniq-train's run."""
    train_config = example.TrainConfig(
        model=spec.model, dataset="digits", image_size=spec.image_size,
        weight_bits=config.weight_bits, activation_bits=config.activation_bits,
        float_epochs=spec.float_epochs, stages=spec.stages,
        epochs_per_stage=spec.epochs_per_stage, final_epochs=spec.final_epochs,
        output_dir=folder, verbose=0,
    )
    summary = example.run(train_config)
    with uniq_tf.quantize_scope():
        from uniq_tf._keras import keras

        model = keras.models.load_model(summary["outputs"]["quantized_model.h5"])
    x_train, _, x_test, _ = data.load_digits()
    if spec.image_size:
        from uniq_tf._keras import tf

        size = (spec.image_size, spec.image_size)
        x_train = tf.image.resize(x_train, size).numpy()
        x_test = tf.image.resize(x_test, size).numpy()
    return model, summary, x_train, x_test


def _invoker(path: str, x: np.ndarray, threads: int):
    """A call that runs one inference of ``path`` on the (already set) input ``x[0:1]``."""
    interpreter = runtime.Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], runtime.quantize_input(x[:1], detail))
    return interpreter.invoke


def measure(spec: DeployModel, config: DeployConfig, folder: str, progress=print) -> dict:
    progress(f"deploy: training {spec.name}")
    os.makedirs(folder, exist_ok=True)
    model, summary, x_train, x_test = train_uniq(spec, config, os.path.join(folder, "train"))
    paths = {
        "float": os.path.join(folder, "model_float.tflite"),
        "int8": os.path.join(folder, "model_int8.tflite"),
        "packed": os.path.join(folder, "model.uniq.npz"),
    }
    progress(f"deploy: exporting {spec.name}")
    float_report = tflite_export.export_tflite(model, paths["float"], "float")
    int8_report = tflite_export.export_tflite(
        model, paths["int8"], "int8", x_train[: config.calibration_samples], samples=x_test
    )
    packed = tflite_export.save_packed(model, paths["packed"])
    sizes = tflite_export.size_report(model, packed, paths["float"], paths["int8"])
    progress(f"deploy: timing {spec.name} in LiteRT")
    times = common.interleaved_times(
        {
            "float": _invoker(paths["float"], x_test, config.threads),
            "int8": _invoker(paths["int8"], x_test, config.threads),
        },
        config.rounds, config.calls_per_round, config.warmup_calls,
    )
    latency = common.timing_summary(times, "float")
    rows = {row.name: {"raw": row.raw_bytes, "gzip": row.gzip_bytes} for row in sizes.rows}
    int8_accuracy = _tflite_accuracy(paths["int8"], x_test)
    return {
        "name": spec.name,
        "model": spec.model,
        "float_accuracy": summary["float_accuracy"],
        "uniq_accuracy": summary["quantized_accuracy"],
        "int8_tflite_accuracy": int8_accuracy,
        "int8_top1_agreement": int8_report.top1_agreement,
        "float_tflite_max_abs_diff": float_report.max_abs_diff,
        "sizes": rows,
        "int8_over_float_tflite": int8_report.size_bytes / float_report.size_bytes,
        "packed_file_bytes": packed.file_bytes,
        "packed_file_ratio": packed.file_ratio,
        "b_over_32": sizes.limit,
        "latency": latency,
        "int8_over_float_latency": latency["int8"]["ratio"],
    }


def measure_size(spec: SizeOnlyModel, config: DeployConfig, folder: str, progress=print) -> dict:
    """Sizes of an untrained model's exports (no latency, no accuracy)."""
    progress(f"deploy: exporting {spec.name}")
    os.makedirs(folder, exist_ok=True)
    float_model = models.get_model(spec.model, spec.input_shape, spec.num_classes)
    model = uniq_tf.quantize_model(float_model, config.weight_bits, config.activation_bits)
    x = np.random.default_rng(0).random((16, *spec.input_shape), dtype=np.float32)
    uniq_tf.calibrate_activations(model, [x], verbose=False)
    paths = {name: os.path.join(folder, f"model_{name}.tflite") for name in ("float", "int8")}
    float_report = tflite_export.export_tflite(model, paths["float"], "float", samples=x[:2])
    int8_report = tflite_export.export_tflite(
        model, paths["int8"], "int8", x, samples=x[:2], min_agreement=0.0
    )
    packed = tflite_export.save_packed(model, os.path.join(folder, "model.uniq.npz"))
    sizes = tflite_export.size_report(model, packed, paths["float"], paths["int8"])
    return {
        "name": spec.name,
        "model": spec.model,
        "sizes": {row.name: {"raw": row.raw_bytes, "gzip": row.gzip_bytes} for row in sizes.rows},
        "int8_over_float_tflite": int8_report.size_bytes / float_report.size_bytes,
        "packed_file_bytes": packed.file_bytes,
        "packed_file_ratio": packed.file_ratio,
        "b_over_32": sizes.limit,
    }


def _tflite_accuracy(path: str, x_test: np.ndarray) -> float:
    _, _, _, y_test = data.load_digits()
    predictions = tflite_export.predict(path, x_test).argmax(-1)
    return float(np.mean(predictions == y_test))


def run(config: DeployConfig, folder: str, progress=print) -> dict:
    results = {"config": dataclasses.asdict(config), "models": [], "size_only": []}
    for i, spec in enumerate(config.models):
        results["models"].append(measure(spec, config, os.path.join(folder, f"model{i}"),
                                         progress))
    for i, spec in enumerate(config.size_only):
        results["size_only"].append(
            measure_size(spec, config, os.path.join(folder, f"size{i}"), progress)
        )
    return results


def tables(results: dict) -> str:
    """Two markdown tables: sizes (bytes) and LiteRT latency."""
    config = results["config"]
    size_rows, latency_rows = [], []
    for entry in results["models"] + results.get("size_only", []):
        sizes = entry["sizes"]
        size_rows.append([
            entry["name"],
            f"{sizes['float32 weights']['raw']:,}",
            f"{sizes['TFLite float']['raw']:,} ({sizes['TFLite float']['gzip']:,})",
            f"{sizes['TFLite int8']['raw']:,} ({sizes['TFLite int8']['gzip']:,})",
            f"{sizes['packed']['raw']:,} ({sizes['packed']['gzip']:,})",
            f"**{entry['int8_over_float_tflite']:.3f}**",
            f"**{entry['packed_file_ratio']:.3f}** (b/32 = {entry['b_over_32']:.4f})",
        ])
        if "latency" not in entry:
            continue
        latency = entry["latency"]
        latency_rows.append([
            entry["name"],
            f"{1e6 * latency['float']['median_s']:.0f}",
            f"{1e6 * latency['int8']['median_s']:.0f}",
            f"**{entry['int8_over_float_latency']:.2f}x**",
            f"{100 * entry['uniq_accuracy']:.2f} / {100 * entry['int8_tflite_accuracy']:.2f}",
        ])
    bits = f"W{config['weight_bits']}A{config['activation_bits']}"
    return (
        f"Sizes in bytes, gzipped (level 9) in parentheses; UNIQ {bits}. Packed / b/32: the "
        "packed file's bytes on disk (indices, codebooks, the other weights, header) over b/32 "
        "of the float32 weight bytes.\n\n"
        + common.markdown_table(
            ["model", "float32 weights", "TFLite float", "TFLite int8", "packed",
             "int8 / float TFLite", "packed / b/32"], size_rows)
        + f"\nLiteRT latency, batch 1, {config['threads']} thread(s), median of "
        f"{config['rounds']} interleaved rounds x {config['calls_per_round']} invocations; "
        "accuracy on the digits test split of the Keras UNIQ model and of the int8 file.\n\n"
        + common.markdown_table(
            ["model", "float TFLite (µs)", "int8 TFLite (µs)", "int8 / float",
             "accuracy % (Keras / int8 file)"], latency_rows)
    )


def quick_config() -> DeployConfig:
    return DeployConfig(
        models=(DeployModel("small_cnn (digits demo, 8x8x1)", "small_cnn", None, 3, 2, 1, 1),),
        size_only=(), rounds=3, calls_per_round=10, warmup_calls=5,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick run (CI's test)")
    parser.add_argument("--output_dir", default="outputs/bench")
    args = parser.parse_args(argv)
    config = quick_config() if args.quick else DeployConfig()
    out = Path(args.output_dir)
    results = run(config, str(out / "deploy"))
    common.write_json(str(out / "deploy.json"), results)
    common.write_text(str(out / "deploy.md"), tables(results))
    print(tables(results))


if __name__ == "__main__":
    main()
