"""Export a UNIQ model saved by uniq-train: float and int8 TFLite, and the packed format.

    uniq-export-tflite --model=outputs/train/quantized_model.h5 \\
        --output_dir=outputs/tflite --dataset=digits
    uniq-export-tflite --model=RUN/quantized_model.h5 --dataset=cifar10 --data_dir=DATA
    uniq-export-tflite --model=m.h5 --dataset=none --input_range=-1,1

Loads the .h5 inside ``uniq_tf.quantize_scope()``, then writes to ``--output_dir``:
model_float.tflite and model_int8.tflite (each verified in LiteRT before it replaces an older
file), model.uniq (b-bit indices + codebooks, see ``uniq_tf.save_packed``), size_report.txt and
summary.json. Data (the flags and preprocessing of ``uniq_tf.cli.export_data``, as uniq-train
read the data set): the int8 file is calibrated on the training split and every file is
checked on the test split, and accuracies are printed where there are labels; with
``--dataset=none`` both use random inputs inside ``--input_range``. The model's input shape is
checked against the data before anything is written.

``run(model_path, output_dir, ...)`` does the same in-process and returns the summary.
"""

from __future__ import annotations

import os

import numpy as np

import tflite_export
import uniq_tf
from tflite_export.export import CALIBRATION_SAMPLES
from uniq_tf.cli import export_data
from uniq_tf.integration import saving
from uniq_tf.util import atomic

# absl prints the docstring and every flag before an app.UsageError; a bad value gets one line.
USAGE_HINT = " (pass --helpshort to see the flags)"


def load_quantized(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {path!r} does not exist; run uniq-train first.")
    return saving.load_quantized(path)


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions.argmax(-1) == labels))


def run(
    model_path: str,
    output_dir: str,
    dataset: str = "digits",
    calibration_samples: int = CALIBRATION_SAMPLES,
    int8_io: bool = True,
    ranges: str = "learned",
    verbose: bool = True,
    data_dir: str | None = None,
    input_range: str | tuple | None = None,
    samples: int = export_data.DEFAULT_SAMPLES,
    check: bool = True,
) -> dict:
    """Writes the exports of ``model_path`` to ``output_dir``; returns the summary dict.

    ``dataset``, ``data_dir``, ``input_range``, ``samples``: the data flags
    (:mod:`uniq_tf.cli.export_data`); ``check``: False writes the files unchecked.
    """
    if isinstance(input_range, str) or input_range is None:
        input_range = export_data.parse_range(input_range)
    atomic.check_directory(output_dir)
    model = load_quantized(model_path)
    if not uniq_tf.is_quantized_model(model):
        raise ValueError(f"{model_path!r} holds no UNIQ-quantized layer; export the output of "
                         "uniq-train (quantized_model.h5).")
    inputs = export_data.load(dataset, model, model_path, data_dir, input_range, samples)
    quantized = uniq_tf.inspect_quantized(model)
    calibration = inputs.calibration if inputs.calibration is not None else inputs.samples
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name)
             for name in ("model_float.tflite", "model_int8.tflite", "model.uniq")}
    common = {"samples": inputs.samples, "input_range": inputs.input_range, "check": check}
    reports = {
        "float": tflite_export.export_tflite(
            quantized, paths["model_float.tflite"], "float", **common),
        "int8": tflite_export.export_tflite(
            quantized, paths["model_int8.tflite"], "int8", calibration, int8_io=int8_io,
            ranges=ranges, calibration_samples=calibration_samples, **common),
    }
    packed = tflite_export.save_packed(quantized, paths["model.uniq"])
    sizes = tflite_export.size_report(
        quantized, packed, paths["model_float.tflite"], paths["model_int8.tflite"])
    atomic.write_text(os.path.join(output_dir, "size_report.txt"), sizes.summary() + "\n")

    summary = {
        "model": model_path,
        "data": inputs.name,
        "checked_on": inputs.source if check else "unchecked (--nocheck)",
        "runtime": tflite_export.RUNTIME,
        "files": {name: os.path.getsize(path) for name, path in paths.items()},
        "max_abs_diff": {mode: r.max_abs_diff for mode, r in reports.items()},
        "tolerance": {mode: r.tolerance for mode, r in reports.items()},
        "top1_agreement": {mode: r.top1_agreement for mode, r in reports.items()},
        "packed_file_bytes": packed.file_bytes,
        "packed_file_ratio": packed.file_ratio,
    }
    if inputs.labels is not None:
        x_test, y_test = inputs.samples, inputs.labels
        summary["test_accuracy"] = {
            "keras_quantized": _accuracy(model.predict(x_test, verbose=0), y_test),
            "keras_stripped": _accuracy(quantized.stripped.predict(x_test, verbose=0), y_test),
            "tflite_float": _accuracy(
                tflite_export.predict(paths["model_float.tflite"], x_test), y_test),
            "tflite_int8": _accuracy(
                tflite_export.predict(paths["model_int8.tflite"], x_test), y_test),
        }
    atomic.write_json(os.path.join(output_dir, "summary.json"), summary)
    if verbose:
        for report in reports.values():
            print(report.summary())
        print(sizes.summary())
        for name, value in summary.get("test_accuracy", {}).items():
            print(f"{inputs.name} test accuracy, {name:<16} {100 * value:.2f}%")
        print(f"Outputs in {os.path.abspath(output_dir)}")
    return summary


def main(argv) -> None:
    from absl import flags, logging

    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {argv[1:]}{USAGE_HINT}")
    f = flags.FLAGS
    logging.set_verbosity(logging.WARNING)  # the converter logs each SavedModel it writes
    try:
        run(f.model, f.output_dir, f.dataset, f.calibration_samples, f.int8_io, f.ranges,
            data_dir=f.data_dir, input_range=f.input_range, samples=f.samples, check=f.check)
    except (ValueError, OSError, tflite_export.ExportError) as error:
        raise SystemExit(f"{error}{USAGE_HINT}") from error


def _define_flags():
    from absl import flags

    export_data.define_flags(output_dir="outputs/tflite", checked_in="LiteRT")
    flags.adopt_module_key_flags(export_data)  # --helpshort lists them with the rest
    flags.DEFINE_integer("calibration_samples", CALIBRATION_SAMPLES,
                         "Representative samples for int8 calibration.")
    flags.DEFINE_bool("int8_io", True, "int8 model input and output in the int8 file.")
    flags.DEFINE_enum("ranges", "learned", ["learned", "calibrated"],
                      "int8 activation ranges: the QAT model's learned ones, or calibration.")


def console() -> None:
    """The ``uniq-export-tflite`` command."""
    from uniq_tf.cli import run_command

    run_command(__name__, _define_flags, main)


if __name__ == "__main__":
    console()
