"""``export_tflite``: strip, convert, write to a temporary file, verify in LiteRT, replace.

Verification, on the samples given (or the first representative samples, or uniform random
inputs in [0, 1]):

- float: outputs equal the stripped Keras model's (codebook weights, float activations) to
  ``atol * max(1, max |reference|)``;
- dynamic / int8: top-1 agreement with the reference (the stripped model for dynamic, the
  quantized Keras model, with its fake-quantized activations, for int8) is at least
  ``min_agreement`` (classifier outputs only; the max difference is reported in every mode);
- every quantized kernel is found, holds at most 2^b distinct values per output channel and
  is consistent with its codebook indices (:mod:`tflite_export.kernels`).

A failure raises and leaves any existing file at ``path`` untouched.
"""

from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from tflite_export import kernels, runtime
from tflite_export._atomic import atomic_output, check_output_path, write_bytes
from tflite_export.convert import MODES, RANGE_SOURCES, convert
from tflite_export.errors import VerificationError
from tflite_export.ranges import RangeUse, ranges_in_file
from tflite_export.samples import as_samples, random_samples
from uniq_tf import (
    ActMode,
    Mode,
    activation_modes,
    get_activation_ranges,
    get_codebooks,
    is_quantized_model,
    strip_quantization,
    weight_modes,
)
from uniq_tf._keras import require_keras2_model

CALIBRATION_SAMPLES = 500
VERIFY_SAMPLES = 256
FLOAT_ATOL = 1e-4
MIN_AGREEMENT = 0.9
TFMOT_INITIAL_RANGE = (-6.0, 6.0)  # MovingAverageQuantizer's min/max before any data


@dataclass
class ExportReport:
    """What :func:`export_tflite` wrote and how the file compared with the Keras model."""

    path: str
    mode: str
    size_bytes: int
    gzip_bytes: int
    input_dtype: str
    output_dtype: str
    runtime: str
    reference: str
    samples_checked: int
    max_abs_diff: float
    top1_agreement: float | None
    kernels: dict[str, kernels.KernelCheck] = field(default_factory=dict)
    activation_ranges: list[RangeUse] = field(default_factory=list)

    def summary(self) -> str:
        agreement = "n/a" if self.top1_agreement is None else f"{100 * self.top1_agreement:.2f}%"
        lines = [
            f"{self.path} [{self.mode}, {self.input_dtype} in / {self.output_dtype} out]: "
            f"{self.size_bytes:,} bytes ({self.gzip_bytes:,} gzipped)",
            f"  checked in {self.runtime} on {self.samples_checked} samples against the "
            f"{self.reference}: max |diff| {self.max_abs_diff:.3g}, top-1 agreement {agreement}",
        ]
        for check in self.kernels.values():
            if check.tensor is None:
                lines.append(f"  kernel {check.key:<24} not found in the file")
                continue
            error = "" if check.max_rel_error is None else f", rel. error {check.max_rel_error:.1e}"
            lines.append(
                f"  kernel {check.key:<24} {check.dtype or '-':>7}: "
                f"<= {check.max_distinct_per_channel} distinct per channel (limit {check.limit}), "
                f"{check.distinct_total} in all{error}"
            )
        for use in self.activation_ranges:
            seen = "-" if use.calibrated is None else _interval(use.calibrated)
            lines.append(
                f"  activation {use.layer:<20} learned {_interval(use.learned)}, "
                f"calibration {seen}, file uses: {use.used}"
            )
        return "\n".join(lines)


def _interval(pair: tuple[float, float]) -> str:
    return f"[{pair[0]:.4g}, {pair[1]:.4g}]"


def _check_args(mode, ranges, calibration_samples, atol, min_agreement):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if ranges not in RANGE_SOURCES:
        raise ValueError(f"ranges must be one of {RANGE_SOURCES}, got {ranges!r}")
    if isinstance(calibration_samples, bool) or not isinstance(calibration_samples, int) or (
        calibration_samples < 1
    ):
        raise ValueError(
            f"calibration_samples must be a positive integer, got {calibration_samples!r}"
        )
    if not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol!r}")
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be in [0, 1], got {min_agreement!r}")


def _check_model(model):
    model = require_keras2_model(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"export_tflite handles single-input, single-output models; model {model.name!r} "
            f"has {len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    return model


def _verify(report: ExportReport, reference: np.ndarray, got: np.ndarray, atol, min_agreement):
    problems = [
        f"kernel {c.key!r}: "
        + ("not found in the file" if c.tensor is None else
           f"{c.max_distinct_per_channel} distinct values in a channel (limit {c.limit}), "
           f"consistent with its indices: {c.consistent}")
        for c in report.kernels.values() if not c.ok
    ]
    bound = atol * max(1.0, float(np.abs(reference).max()))
    if report.mode == "float" and report.max_abs_diff > bound:
        problems.append(f"max |diff| {report.max_abs_diff:.3g} exceeds {bound:.3g}")
    if report.mode != "float" and report.top1_agreement is not None and (
        report.top1_agreement < min_agreement
    ):
        problems.append(
            f"top-1 agreement {report.top1_agreement:.4f} is below min_agreement {min_agreement}"
        )
    if problems:
        raise VerificationError(
            f"The {report.mode} TFLite file for {report.path!r} failed verification against the "
            f"{report.reference} ({report.samples_checked} samples): " + "; ".join(problems)
            + ". Nothing was written."
        )


def _verification_samples(model, samples, calibration) -> np.ndarray:
    if samples is not None:
        return as_samples(samples, model, what="samples")
    if calibration is not None:
        return calibration[:VERIFY_SAMPLES]
    return random_samples(model)


def _warn_unfinished(model) -> None:
    """Warns about quantizers still switched off: the export quantizes every kernel anyway,
    but the int8 check compares against the Keras model as it runs."""
    float_weights = [n for n, m in weight_modes(model).items() if m == Mode.FLOAT]
    float_acts = [n for n, m in activation_modes(model).items() if m != ActMode.QUANTIZED]
    if float_weights or float_acts:
        warnings.warn(
            f"Model {model.name!r} has quantizers that are not on (weights in FLOAT mode: "
            f"{float_weights}; activations not QUANTIZED: {float_acts}). The exported kernels "
            "are the codebooks all the same; set the modes (or finish the schedule) so that the "
            "Keras model and its export compute the same thing.",
            stacklevel=4,
        )


def _warn_uncalibrated(learned: dict[str, tuple[float, float, int]]) -> None:
    untouched = [name for name, (lo, hi, _) in learned.items() if (lo, hi) == TFMOT_INITIAL_RANGE]
    if untouched:
        warnings.warn(
            f"Activation ranges of {untouched} are still TFMOT's initial {TFMOT_INITIAL_RANGE}: "
            "the model was never calibrated or trained. Call uniq_tf.calibrate_activations, or "
            "export with ranges='calibrated'.",
            stacklevel=4,
        )


def _plan(model, mode: str, ranges: str):
    """(model to convert, codebooks, learned ranges, reference model, reference name)."""
    if not is_quantized_model(model):
        warnings.warn(
            f"Model {model.name!r} was never quantized (no UNIQ layer): exporting the float "
            f"model as it is (mode {mode!r}), without codebook checks. Call "
            "uniq_tf.quantize_model first to export codebook weights.",
            stacklevel=3,
        )
        return model, {}, {}, model, "Keras model"
    _warn_unfinished(model)
    plain = strip_quantization(model)
    codebooks, learned = get_codebooks(model), get_activation_ranges(model)
    if mode == "int8" and ranges == "learned":
        _warn_uncalibrated(learned)
    if mode == "int8":
        return plain, codebooks, learned, model, "quantized Keras model"
    return plain, codebooks, learned, plain, "stripped Keras model"


def export_tflite(
    model,
    path: str | os.PathLike,
    mode: str = "float",
    representative_data=None,
    *,
    samples=None,
    int8_io: bool = True,
    ranges: str = "learned",
    calibration_samples: int = CALIBRATION_SAMPLES,
    atol: float = FLOAT_ATOL,
    min_agreement: float = MIN_AGREEMENT,
) -> ExportReport:
    """Writes ``model`` (a UNIQ-quantized tf_keras model) as a verified TFLite file.

    The quantization wrappers are stripped first (``uniq_tf.strip_quantization``: kernels hold
    their codebook values, activations float), then converted (see :mod:`tflite_export.convert`
    for the modes).

    Args:
        model: a quantized model from ``uniq_tf.quantize_model`` (a plain float model is
            exported as it is, with a warning).
        path: the output file; written atomically, an existing file is replaced only by a
            file that passed verification.
        mode: "float", "dynamic" or "int8" (full integer).
        representative_data: inputs for int8 calibration (required for "int8"): an array
            (N, *input_shape), a tf.data.Dataset of batches or (x, y) pairs, an iterable of
            batches or a converter-style generator function. Up to ``calibration_samples``
            are used.
        samples: inputs to verify on (default: the first 256 representative samples, else 32
            uniform random inputs in [0, 1]).
        int8_io: "int8" mode only: int8 model input and output (else float32, with quantize
            and dequantize ops inside the file).
        ranges: "int8" mode only: "learned" writes the activation quantizers' learned ranges
            where the model has them (the representative data calibrates the other tensors:
            the input, the logits); "calibrated" uses the converter's calibration everywhere.
        atol: float mode tolerance, relative to max(1, max |output|).
        min_agreement: minimal top-1 agreement in "dynamic" and "int8" modes.
    """
    model = _check_model(model)
    _check_args(mode, ranges, calibration_samples, atol, min_agreement)
    if mode == "int8" and representative_data is None:
        raise ValueError(
            "mode='int8' needs representative_data: the converter calibrates the ranges of the "
            "tensors without a learned activation quantizer (the model input, the logits) on it. "
            "Pass some training inputs, e.g. representative_data=x_train[:500]."
        )
    check_output_path(path)
    calibration = (
        None if representative_data is None
        else as_samples(representative_data, model, calibration_samples)
    )
    checked = _verification_samples(model, samples, calibration)
    plain, codebooks, learned, reference_model, reference = _plan(model, mode, ranges)
    content, range_uses = convert(
        plain, mode, calibration, int8_io, learned if ranges == "learned" else None
    )
    if mode == "int8" and ranges == "calibrated" and learned:
        range_uses = ranges_in_file(content, learned)

    expected = reference_model.predict(checked, verbose=0, batch_size=VERIFY_SAMPLES)
    with atomic_output(path) as temp:
        write_bytes(temp, content)
        got = runtime.predict(temp, checked)
        input_dtype, output_dtype = runtime.io_types(temp)
        classifier = expected.ndim > 1 and expected.shape[-1] > 1
        agreement = float(np.mean(got.argmax(-1) == expected.argmax(-1))) if classifier else None
        report = ExportReport(
            path=os.fspath(path),
            mode=mode,
            size_bytes=len(content),
            gzip_bytes=len(gzip.compress(content, compresslevel=9)),
            input_dtype=input_dtype,
            output_dtype=output_dtype,
            runtime=runtime.RUNTIME,
            reference=reference,
            samples_checked=len(checked),
            max_abs_diff=float(np.abs(got - expected).max()),
            top1_agreement=agreement,
            kernels=kernels.check_kernels(temp, codebooks),
            activation_ranges=range_uses,
        )
        _verify(report, expected, got, atol, min_agreement)
    return report
