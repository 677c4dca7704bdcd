"""Export a UNIQ model saved by uniq-train: float and int8 TFLite, and the packed format.

    uniq-export-tflite --model=outputs/train/quantized_model.h5 \\
        --output_dir=outputs/tflite --dataset=digits

Loads the .h5 inside ``uniq_tf.quantize_scope()``, then writes to ``--output_dir``:
model_float.tflite and model_int8.tflite (each verified in LiteRT before it replaces an older
file), model.uniq (b-bit indices + codebooks, see ``tflite_export.packed``), size_report.txt
and summary.json. With ``--dataset=digits`` the int8 file is calibrated on the training split
and every model's accuracy on the test split is printed; with ``--dataset=none`` calibration
uses uniform random inputs in [0, 1] (only the input and logit ranges depend on it: the
activation ranges come from the quantized model).

``run(model_path, output_dir, ...)`` does the same in-process and returns the summary.
"""

from __future__ import annotations

import os

import numpy as np

import tflite_export
import uniq_tf
from tflite_export.export import CALIBRATION_SAMPLES
from tflite_export.samples import random_samples
from uniq_tf.integration import saving
from uniq_tf.util import atomic
from uniq_tf.zoo import data

# absl prints the docstring and every flag before an app.UsageError; a bad value gets one line.
USAGE_HINT = " (pass --helpshort to see the flags)"

DATASETS = ("digits", "none")
RANDOM_CALIBRATION_SAMPLES = 200


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
) -> dict:
    """Writes the exports of ``model_path`` to ``output_dir``; returns the summary dict."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    model = load_quantized(model_path)
    if not uniq_tf.is_quantized_model(model):
        raise ValueError(f"{model_path!r} holds no UNIQ-quantized layer; export the output of "
                         "uniq-train (quantized_model.h5).")
    os.makedirs(output_dir, exist_ok=True)
    if dataset == "digits":
        x_train, _, x_test, y_test = data.load_digits()
        if tuple(model.inputs[0].shape[1:]) != x_train.shape[1:]:
            raise ValueError(f"The model takes inputs {model.inputs[0].shape[1:]}, digits are "
                             f"{x_train.shape[1:]}; use --dataset=none for other models.")
        calibration, samples = x_train, x_test
    else:
        calibration = random_samples(model, RANDOM_CALIBRATION_SAMPLES)
        samples = calibration

    paths = {name: os.path.join(output_dir, name)
             for name in ("model_float.tflite", "model_int8.tflite", "model.uniq")}
    reports = {
        "float": tflite_export.export_tflite(
            model, paths["model_float.tflite"], "float", samples=samples),
        "int8": tflite_export.export_tflite(
            model, paths["model_int8.tflite"], "int8", calibration, samples=samples,
            int8_io=int8_io, ranges=ranges, calibration_samples=calibration_samples),
    }
    packed = tflite_export.save_packed(model, paths["model.uniq"])
    sizes = tflite_export.size_report(
        model, packed, paths["model_float.tflite"], paths["model_int8.tflite"])
    atomic.write_text(os.path.join(output_dir, "size_report.txt"), sizes.summary() + "\n")

    summary = {
        "model": model_path,
        "runtime": tflite_export.RUNTIME,
        "files": {name: os.path.getsize(path) for name, path in paths.items()},
        "max_abs_diff": {mode: r.max_abs_diff for mode, r in reports.items()},
        "top1_agreement": {mode: r.top1_agreement for mode, r in reports.items()},
        "packed_index_ratio": packed.index_ratio,
        "packed_limit_b_over_32": sizes.limit,
    }
    if dataset == "digits":
        summary["test_accuracy"] = {
            "keras_quantized": _accuracy(model.predict(x_test, verbose=0), y_test),
            "keras_stripped": _accuracy(
                uniq_tf.strip_quantization(model).predict(x_test, verbose=0), y_test),
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
            print(f"digits test accuracy, {name:<16} {100 * value:.2f}%")
        print(f"Outputs in {os.path.abspath(output_dir)}")
    return summary


def main(argv) -> None:
    from absl import flags, logging

    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {argv[1:]}{USAGE_HINT}")
    f = flags.FLAGS
    logging.set_verbosity(logging.WARNING)  # the converter logs each SavedModel it writes
    try:
        run(f.model, f.output_dir, f.dataset, f.calibration_samples, f.int8_io, f.ranges)
    except (ValueError, FileNotFoundError, tflite_export.ExportError) as error:
        raise SystemExit(f"{error}{USAGE_HINT}") from error


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "Quantized model (.h5) written by uniq-train.")
    flags.DEFINE_string("output_dir", "outputs/tflite", "Where the exports go.")
    flags.DEFINE_enum("dataset", "digits", list(DATASETS), "Calibration and test data.")
    flags.DEFINE_integer("calibration_samples", CALIBRATION_SAMPLES,
                         "Representative samples for int8 calibration.")
    flags.DEFINE_bool("int8_io", True, "int8 model input and output in the int8 file.")
    flags.DEFINE_enum("ranges", "learned", ["learned", "calibrated"],
                      "int8 activation ranges: the QAT model's learned ones, or calibration.")
    flags.mark_flag_as_required("model")


def console() -> None:
    """The ``uniq-export-tflite`` command."""
    from uniq_tf.cli import run_command

    run_command(__name__, _define_flags, main)


if __name__ == "__main__":
    console()
