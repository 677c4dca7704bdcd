"""Export a UNIQ model saved by uniq-train as a FINN-ready bundle (QONNX + configs), checked.

    uniq-export-finn --model=outputs/train/quantized_model.h5 \\
        --output_dir=outputs/fpga --overwrite
    uniq-export-finn --model=RUN/quantized_model.h5 --dataset=cifar10 --data_dir=DATA
    uniq-export-finn --model=m.h5 --dataset=inputs.npz       # x (and y) as the model sees them
    uniq-export-finn --model=m.h5 --dataset=none --input_range=-1,1

Loads the .h5 inside ``uniq_tf.quantize_scope()`` and writes ``<output_dir>/finn_bundle`` with
``fpga_export.export_finn`` (model.onnx, codebooks.npz, descriptor.json, FINN's build and
folding configs, finn_steps.py, README.md), then ``<output_dir>/summary.json``.

Data (the flags and preprocessing of ``uniq_tf.cli.export_data``, as uniq-train read the data
set): the training split gives the input quantizer's range (digits: the exact 5-bit quantizer
of the pixel counts 0..16 / 16; ``--input_range`` states it instead), the test split the check:
the bundle is run with qonnx's executor against the quantized Keras model, and a failed check
leaves no bundle (``--nocheck`` writes it unchecked). With ``--dataset=none`` the check runs
on random inputs inside ``--input_range``. The model's input shape is checked against the data
before anything is written.

Grid widths: by default (``--weight_grid_bits=rule``) each layer's B is the grid the model was
trained on (``uniq-train --grid_bits=B``, as ``make demo`` does: the bundle then computes what
the model computes), else the data-free rule (within 1 % of each codebook's level gap: B = 10
for 4-bit codebooks). ``--weight_grid_bits=auto`` picks each layer's B by top-1 agreement with
the Keras model within ``--validation_tolerance`` on the last ``VALIDATION_SIZE`` training
inputs (the test split stays unseen; agreement on training images overstates agreement on new
ones, see docs/benchmarks.md section 6); ``--grid_aware_bits=B`` first fine-tunes the model for
``--grid_aware_epochs`` on the digits training split with its codebooks snapped to B bits
(``uniq_tf.set_grid_bits``).

FINN itself runs in a separate environment: see examples/finn_estimate.py.
``run(model_path, output_dir, ...)`` does the same in-process and returns the summary.
"""

from __future__ import annotations

import json
import os

import numpy as np

import fpga_export
from uniq_tf.cli import export_data
from uniq_tf.integration import saving
from uniq_tf.util import atomic
from uniq_tf.zoo import data

# absl prints the docstring and every flag before an app.UsageError; a bad value gets one line.
USAGE_HINT = " (pass --helpshort to see the flags)"

BUNDLE = "finn_bundle"
VALIDATION_SIZE = 360


def _parse_grid_bits(text: str | int | None) -> int | str | None:
    if text is None or text in ("auto", "rule") or isinstance(text, int):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"--weight_grid_bits takes an integer, 'auto' or 'rule', got {text!r}") from None


def grid_aware_fine_tune(model, bits: int, epochs: int, learning_rate: float) -> None:
    """Fine-tunes ``model`` on the digits training split with its codebooks on the ``bits``
    grid (weights in QUANTIZED mode; logits, sparse cross-entropy, Adam)."""
    from uniq_tf import Mode, set_grid_bits, set_weight_mode
    from uniq_tf._keras import keras

    x_train, y_train, _, _ = data.load_digits()
    set_grid_bits(model, bits)
    set_weight_mode(model, Mode.QUANTIZED)
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)


def load_quantized(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {path!r} does not exist; run uniq-train first.")
    return saving.load_quantized(path)


def _parse_shape(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--input_shape takes 'height,width,channels', got {text!r}") from None
    return shape


def _input_args(inputs: export_data.ExportData) -> dict:
    """The input quantizer's arguments of export_finn: stated, or the data."""
    if inputs.input_range is not None:
        return {"input_range": inputs.input_range, "data": inputs.calibration}
    if inputs.input_quant is not None:
        quant = inputs.input_quant
        return {"input_bits": quant["bits"], "input_scale": quant["scale"],
                "input_signed": quant["signed"], "data": inputs.calibration}
    return {"data": inputs.calibration}


def run(
    model_path: str,
    output_dir: str,
    dataset: str = "digits",
    input_shape: str | None = None,
    weight_grid_bits: int | str | None = None,
    target_fps: float | None = None,
    board: str | None = None,
    overwrite: bool = False,
    verbose: bool = True,
    validation_tolerance: float = 0.005,
    grid_aware_bits: int | None = None,
    grid_aware_epochs: int = 2,
    grid_aware_lr: float = 1e-4,
    data_dir: str | None = None,
    input_range: str | tuple | None = None,
    samples: int = export_data.DEFAULT_SAMPLES,
    check: bool = True,
) -> dict:
    """Writes the bundle of ``model_path`` under ``output_dir``; returns the summary dict.

    ``dataset``, ``data_dir``, ``input_range``, ``samples``: the data flags
    (:mod:`uniq_tf.cli.export_data`). ``weight_grid_bits``: an integer, "rule" or None (the
    trained grid, else the data-free rule), or "auto" (measured on the last VALIDATION_SIZE
    training inputs). ``grid_aware_bits``: fine-tune on that grid first (digits only).
    ``check``: False writes the bundle unchecked.
    """
    weight_grid_bits = _parse_grid_bits(weight_grid_bits)
    if isinstance(input_range, str) or input_range is None:
        input_range = export_data.parse_range(input_range)
    if grid_aware_bits is not None and dataset != "digits":
        raise ValueError("--grid_aware_bits fine-tunes on digits here; call "
                         "uniq_tf.set_grid_bits and fit on your own data instead")
    atomic.check_directory(output_dir)
    model = load_quantized(model_path)
    inputs = export_data.load(dataset, model, model_path, data_dir, input_range, samples)
    if weight_grid_bits == "auto" and inputs.calibration is None:
        raise ValueError("--weight_grid_bits=auto measures agreement on training inputs; "
                         "--dataset=none has none")
    if grid_aware_bits is not None:
        grid_aware_fine_tune(model, grid_aware_bits, grid_aware_epochs, grid_aware_lr)
    auto = {}
    if weight_grid_bits == "auto":
        auto = {"validation_data": inputs.calibration[-VALIDATION_SIZE:],
                "validation_tolerance": validation_tolerance}
    bundle_dir = os.path.join(output_dir, BUNDLE)
    result = fpga_export.export_finn(
        model, bundle_dir, _parse_shape(input_shape),
        None if weight_grid_bits == "rule" else weight_grid_bits, target_fps, board,
        overwrite=overwrite, check=check,
        check_data=None if inputs.calibration is None else inputs.samples,
        **_input_args(inputs),
        **auto,
    )
    desc = result.descriptor
    totals = desc["totals"]
    summary = {
        "model": model_path,
        "bundle": bundle_dir,
        "data": inputs.name,
        "input_quantizer": {**desc["input"]["quant"], "how": desc["input"]["how"]},
        "check": desc["check"],
        "grid_bits": {row["name"]: row["weight_grid_bits"] for row in desc["layers"]},
        "grid_rules": {row["name"]: row["codebook"]["grid_rule"] for row in desc["layers"]
                       if row["codebook"]},
        "grid_selection": desc["weight_grid"]["selection"],
        "macs": totals["macs"],
        "bops_paper_index_bits": totals["bops_paper_index_bits"],
        "bops_simple_grid_bits": totals["bops_simple_grid_bits"],
        "qonnx_total_bops": (totals["qonnx_inference_cost"] or {}).get("total_bops"),
        "finn_compatible": desc["finn_compatible"],
    }
    if inputs.labels is not None and desc["check"]["status"] == "passed":
        exported = fpga_export.check.predict(bundle_dir, inputs.samples)
        keras_out = model.predict(inputs.samples, verbose=0)
        summary["test_accuracy"] = {
            "keras_quantized": float(np.mean(keras_out.argmax(-1) == inputs.labels)),
            "exported_onnx": float(np.mean(exported.argmax(-1) == inputs.labels)),
        }
    os.makedirs(output_dir, exist_ok=True)
    atomic.write_json(os.path.join(output_dir, "summary.json"), summary,
                      default=atomic.json_default)
    if verbose:
        print(json.dumps(summary, indent=2, default=atomic.json_default))
        print(f"Bundle in {os.path.abspath(bundle_dir)}; FINN: see its README.md")
    return summary


def main(argv) -> None:
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {argv[1:]}{USAGE_HINT}")
    f = flags.FLAGS
    try:
        run(f.model, f.output_dir, f.dataset, f.input_shape, f.weight_grid_bits, f.target_fps,
            f.board, f.overwrite, validation_tolerance=f.validation_tolerance,
            grid_aware_bits=f.grid_aware_bits, grid_aware_epochs=f.grid_aware_epochs,
            grid_aware_lr=f.grid_aware_lr, data_dir=f.data_dir, input_range=f.input_range,
            samples=f.samples, check=f.check)
    except FileExistsError as error:
        raise SystemExit(f"{error} (flag --overwrite){USAGE_HINT}") from error
    except (ValueError, FileNotFoundError, OSError) as error:
        raise SystemExit(f"{error}{USAGE_HINT}") from error


def _define_flags():
    from absl import flags

    export_data.define_flags(output_dir="outputs/fpga", checked_in="qonnx")
    flags.adopt_module_key_flags(export_data)  # --helpshort lists them with the rest
    flags.DEFINE_string("input_shape", None, "height,width,channels for a dynamic-shape model.")
    flags.DEFINE_string("weight_grid_bits", None, "Integer grid width B for every layer, "
                        "'auto' (per layer, by measured agreement with the Keras model on "
                        "training inputs) or 'rule' (the default: the grid the model was "
                        "trained on, uniq-train --grid_bits, else the smallest within 1% of "
                        "each codebook's level gap).")
    flags.DEFINE_float("validation_tolerance", 0.005, "For 'auto': 1 - the top-1 agreement "
                       "allowed.")
    flags.DEFINE_integer("grid_aware_bits", None, "Fine-tune on this grid width first "
                         "(digits).")
    flags.DEFINE_integer("grid_aware_epochs", 2, "Epochs of the grid-aware fine-tune.")
    flags.DEFINE_float("grid_aware_lr", 1e-4, "Adam learning rate of the grid-aware fine-tune.")
    flags.DEFINE_float("target_fps", None, "Frames/s the folding config aims at.")
    flags.DEFINE_string("board", None, "FINN board (default Pynq-Z1).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing bundle.")


def console() -> None:
    """The ``uniq-export-finn`` command."""
    from uniq_tf.cli import run_command

    run_command(__name__, _define_flags, main)


if __name__ == "__main__":
    console()
