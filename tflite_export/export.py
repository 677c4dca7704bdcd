"""``export_tflite``: strip, convert, write to a temporary file, verify in LiteRT, replace.

Verification, on the samples given (or the first representative samples, or uniform random
inputs inside ``input_range``, default [0, 1]; the report says which), against a reference
(the stripped Keras model, codebook weights and float activations, for float and dynamic; the
quantized Keras model, with its fake-quantized activations, for int8):

- every output of the reference and of the file is finite;
- the max |diff| is within a tolerance: float ``atol * max(1, max |reference|)``; dynamic
  ``DYNAMIC_RTOL * max(1, max |reference|)``; int8 ``max_steps`` steps of the file's output
  quantization (its scale; after a final sigmoid, tanh or softmax at least what one step of
  their input changes, see :func:`tflite_export.runtime.io_quantization`), whatever the output
  is (regression, sigmoid, logits), on all but ``MAX_OUTLIERS`` of the samples (an activation
  range calibrated on other data may clip a rare sample);
- int8: the samples span at least ``MIN_INPUT_LEVELS`` steps of the file's input quantization
  and at most ``MAX_INPUT_CLIPPED`` of their values fall outside its range (else the
  representative data's range is far wider, or narrower, than the samples');
- classifiers (more than one output unit): top-1 agreement of at least ``min_agreement`` on
  the rows whose top-2 gap in the reference exceeds the tolerance (a near tie may flip);
- every quantized kernel is found, holds at most 2^b distinct values per output channel and
  is consistent with its codebook indices (:mod:`tflite_export.kernels`).

A failure raises and leaves any existing file at ``path`` untouched (no new file either).
``check=False`` writes the file without running it; the report then says "unchecked". The model
is read once (``uniq_tf.inspect_quantized``): its codebooks, ranges and stripped graph.
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
from uniq_tf import ActMode, Mode, QuantizedModel, is_quantized_model
from uniq_tf._keras import require_keras2_model
from uniq_tf.util import checks
from uniq_tf.util.graph import check_finite_weights

CALIBRATION_SAMPLES = 500
VERIFY_SAMPLES = 256
FLOAT_ATOL = 1e-4
DYNAMIC_RTOL = 0.05
MAX_STEPS = 8.0  # int8 tolerance, in steps of the file's output quantization
MAX_OUTLIERS = 0.01  # int8: fraction of samples allowed beyond the tolerance
MIN_INPUT_LEVELS = 32  # of the int8 input's 256 steps the samples must span
MAX_INPUT_CLIPPED = 0.01  # fraction of the samples' input values the int8 input may clip
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
    max_abs_diff: float | None  # None: unchecked (check=False)
    tolerance: float | None
    outliers: float | None  # fraction of samples whose max |diff| exceeds the tolerance
    output_step: float | None  # int8: the output's step (runtime.io_quantization)
    top1_agreement: float | None
    clear_rows: int | None = None  # classifier rows whose reference top-2 gap > tolerance
    clear_agreement: float | None = None  # top-1 agreement on those rows (the one checked)
    input_levels: float | None = None  # int8: steps of the file's input the samples span
    input_clipped: float | None = None  # int8: fraction of sample values outside its range
    kernels: dict[str, kernels.KernelCheck] = field(default_factory=dict)
    activation_ranges: list[RangeUse] = field(default_factory=list)
    samples_source: str = ""  # where the samples come from, in words

    @property
    def checked(self) -> bool:
        """False for a file written with check=False."""
        return self.max_abs_diff is not None

    def _agreement_text(self) -> str:
        if self.top1_agreement is None:
            return "n/a"
        if not self.clear_rows:
            return f"{100 * self.top1_agreement:.2f}% (every row a near tie)"
        return (f"{100 * self.top1_agreement:.2f}% ({100 * self.clear_agreement:.2f}% on the "
                f"{self.clear_rows} rows without a near tie)")

    def summary(self) -> str:
        head = (f"{self.path} [{self.mode}, {self.input_dtype} in / {self.output_dtype} out]: "
                f"{self.size_bytes:,} bytes ({self.gzip_bytes:,} gzipped)")
        if not self.checked:
            return head + "\n  unchecked (check=False): the file was not run"
        lines = [
            head,
            f"  checked in {self.runtime} on {self.samples_checked} samples "
            f"({self.samples_source}) against the "
            f"{self.reference}: max |diff| {self.max_abs_diff:.3g} (tolerance "
            f"{self.tolerance:.3g}, exceeded on {100 * self.outliers:.1f}% of the samples), "
            f"top-1 agreement {self._agreement_text()}",
        ]
        if self.input_clipped is not None:
            span = "-" if self.input_levels is None else f"{self.input_levels:.0f}"
            lines.append(f"  input: the samples span {span} of 256 steps, "
                         f"{100 * self.input_clipped:.2f}% outside the range")
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


def _check_args(mode, ranges, calibration_samples, atol, max_steps, min_agreement):
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
    if not 0 < max_steps < float("inf"):
        raise ValueError(f"max_steps must be a positive number, got {max_steps!r}")
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be in [0, 1], got {min_agreement!r}")


def _check_model(model):
    """``model`` read once: a QuantizedModel (checked when it was read) for a quantized model,
    the Keras model itself for a float one."""
    if not isinstance(model, QuantizedModel):
        model = require_keras2_model(model)
        model = QuantizedModel(model) if is_quantized_model(model) else model
        if not isinstance(model, QuantizedModel):
            check_finite_weights(model)
    keras_model = model.model if isinstance(model, QuantizedModel) else model
    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        raise ValueError(
            f"export_tflite handles single-input, single-output models; model "
            f"{keras_model.name!r} has {len(keras_model.inputs)} inputs and "
            f"{len(keras_model.outputs)} outputs."
        )
    return model


def _kernel_problems(report: ExportReport) -> list[str]:
    return [
        f"kernel {c.key!r}: "
        + ("not found in the file" if c.tensor is None else
           f"{c.max_distinct_per_channel} distinct values in a channel (limit {c.limit}), "
           f"consistent with its indices: {c.consistent}")
        for c in report.kernels.values() if not c.ok
    ]


def _verify(report: ExportReport, min_agreement: float, hint: str) -> None:
    """Raises VerificationError listing every check (module docstring) the file failed."""
    problems = _kernel_problems(report)
    allowed = MAX_OUTLIERS if report.mode == "int8" else 0.0
    if report.outliers > allowed:
        steps = (
            "" if report.output_step is None
            else f" ({report.tolerance / report.output_step:g} steps of the file's output "
            f"quantization, {report.output_step:.3g})"
        )
        problems.append(
            f"max |diff| {report.max_abs_diff:.3g} exceeds the tolerance {report.tolerance:.3g}"
            + steps + f" on {100 * report.outliers:.1f}% of the samples (at most "
            f"{100 * allowed:g}% allowed)"
        )
    if report.input_levels is not None and report.input_levels < MIN_INPUT_LEVELS:
        problems.append(
            f"the samples span only {report.input_levels:.1f} of the file's 256 input steps "
            f"(at least {MIN_INPUT_LEVELS} needed): the representative data's range is far "
            "wider than the samples' (scaled differently?)"
        )
    if report.input_clipped is not None and report.input_clipped > MAX_INPUT_CLIPPED:
        problems.append(
            f"{100 * report.input_clipped:.1f}% of the samples' input values lie outside the "
            f"file's input range (at most {100 * MAX_INPUT_CLIPPED:g}% allowed): the "
            "representative data's range is narrower than the samples' (scaled differently?)"
        )
    if report.clear_agreement is not None and report.clear_agreement < min_agreement:
        problems.append(
            f"top-1 agreement {report.clear_agreement:.4f} on the {report.clear_rows} rows "
            f"whose top-2 gap exceeds the tolerance is below min_agreement {min_agreement}"
        )
    if problems:
        raise VerificationError(
            f"The {report.mode} TFLite file for {report.path!r} failed verification against the "
            f"{report.reference} ({report.samples_checked} samples): " + "; ".join(problems)
            + f".{hint} Nothing was written."
        )


def _check_finite_outputs(outputs: np.ndarray, what: str, path, hint: str) -> None:
    """VerificationError if ``outputs`` (one row per sample) hold NaN or inf."""
    bad = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    if bad.any():
        raise VerificationError(
            f"{what} gives non-finite outputs (NaN or inf) on {int(bad.sum())} of {len(bad)} "
            f"samples (first: {np.flatnonzero(bad)[:5].tolist()}), so the TFLite file for "
            f"{os.fspath(path)!r} cannot be verified.{hint} Nothing was written."
        )


def _tolerance(mode: str, reference: np.ndarray, output_step: float | None, atol: float,
               max_steps: float) -> float:
    """The max |diff| allowed between the file and the reference (module docstring)."""
    if mode == "int8" and output_step is not None:
        return max_steps * output_step
    scale = max(1.0, float(np.abs(reference).max()))
    return (atol if mode == "float" else DYNAMIC_RTOL) * scale


def _outliers(reference: np.ndarray, got: np.ndarray, tolerance: float) -> float:
    """The fraction of samples (rows) on which some output differs by more than tolerance."""
    diff = np.abs(got - reference).reshape(len(reference), -1)
    return float(np.mean(diff.max(axis=1) > tolerance))


def _agreement(
    reference: np.ndarray, got: np.ndarray, tolerance: float
) -> tuple[float | None, int | None, float | None]:
    """Classifier outputs: (top-1 agreement, number of rows whose reference top-2 gap exceeds
    ``tolerance``, agreement on those rows or None if there are none); else Nones."""
    if reference.ndim < 2 or reference.shape[-1] < 2:
        return None, None, None
    reference = reference.reshape(-1, reference.shape[-1])
    same = reference.argmax(-1) == got.reshape(reference.shape).argmax(-1)
    top2 = np.sort(reference, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > tolerance
    return (
        float(same.mean()), int(clear.sum()), float(same[clear].mean()) if clear.any() else None
    )


def _input_fit(
    samples: np.ndarray, quantization: tuple[float, int] | None
) -> tuple[float | None, float | None]:
    """(steps of the file's input quantization the samples span, None if they are constant;
    fraction of sample values more than a step outside its range); (None, None) if the input
    is not quantized."""
    if quantization is None or not np.issubdtype(samples.dtype, np.floating):
        return None, None
    scale, zero_point = quantization
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
    clipped = float(np.mean((samples < low - scale) | (samples > high + scale)))
    span = float(samples.max() - samples.min())
    return (span / scale if span > 0 else None), clipped


def _check_not_constant(calibration: np.ndarray) -> None:
    """ValueError for representative data that holds one value only: every range the
    converter calibrates on it would have zero width."""
    if calibration.min() == calibration.max():
        raise ValueError(
            f"representative_data holds a single value ({calibration.flat[0].item()!r}) in all "
            f"of its {len(calibration)} samples: the int8 converter would calibrate ranges of zero "
            "width on it. Pass real inputs, e.g. representative_data=x_train[:500]."
        )


def _verification_samples(model, samples, calibration, input_range) -> tuple[np.ndarray, str]:
    """The samples the file is checked on, and where they come from (in words)."""
    if samples is not None:
        checked = as_samples(samples, model, what="samples")
        return checked, f"{len(checked)} samples given"
    if calibration is not None:
        checked = calibration[:VERIFY_SAMPLES]
        return checked, f"the first {len(checked)} representative samples"
    checked = random_samples(model, input_range=input_range)
    lo, hi = (0.0, 1.0) if input_range is None else input_range
    how = "input_range" if input_range is not None else "no data or input_range given"
    return checked, f"{len(checked)} random inputs, uniform in [{lo:g}, {hi:g}] ({how})"


def _warn_unfinished(quantized: QuantizedModel) -> None:
    """Warns about quantizers still switched off: the export quantizes every kernel anyway,
    but the int8 check compares against the Keras model as it runs."""
    model = quantized.model
    float_weights = [n for n, m in quantized.weight_modes().items() if m == Mode.FLOAT]
    float_acts = [n for n, m in quantized.activation_modes().items()
                  if m != ActMode.QUANTIZED]
    if float_weights or float_acts:
        warnings.warn(
            f"Model {model.name!r} has quantizers that are not on (weights in FLOAT mode: "
            f"{float_weights}; activations not QUANTIZED: {float_acts}). The exported kernels "
            "are the codebooks all the same; set the modes (or finish the schedule) so that the "
            "Keras model and its export compute the same thing.",
            stacklevel=4,
        )


def _uncalibrated(learned: dict[str, tuple[float, float, int]]) -> list[str]:
    """Activation quantizers whose range is still TFMOT's initial one."""
    initial = (TFMOT_INITIAL_RANGE, (0.0, TFMOT_INITIAL_RANGE[1]))  # after a ReLU: from 0
    return [name for name, (lo, hi, _) in learned.items() if (lo, hi) in initial]


def _uncalibrated_hint(mode: str, learned: dict[str, tuple[float, float, int]]) -> str:
    """What a failed int8 check should say when the model was never calibrated."""
    untouched = _uncalibrated(learned)
    if mode != "int8" or not untouched:
        return ""
    return (
        f" The activation ranges of {untouched} were never calibrated (still TFMOT's initial "
        f"{TFMOT_INITIAL_RANGE}); calibrating first with uniq_tf.calibrate_activations(model, "
        "data) would likely make the file and the Keras model agree."
    )


def _warn_uncalibrated(learned: dict[str, tuple[float, float, int]]) -> None:
    untouched = _uncalibrated(learned)
    if untouched:
        warnings.warn(
            f"Activation ranges of {untouched} are still TFMOT's initial {TFMOT_INITIAL_RANGE}: "
            "the model was never calibrated or trained. Call uniq_tf.calibrate_activations, or "
            "export with ranges='calibrated'.",
            stacklevel=4,
        )


def _plan(model, mode: str, ranges: str):
    """(model to convert, codebooks, learned ranges, reference model, reference name)."""
    if not isinstance(model, QuantizedModel):
        warnings.warn(
            f"Model {model.name!r} was never quantized (no UNIQ layer): exporting the float "
            f"model as it is (mode {mode!r}), without codebook checks. Call "
            "uniq_tf.quantize_model first to export codebook weights.",
            stacklevel=3,
        )
        return model, {}, {}, model, "Keras model"
    quantized, model = model, model.model
    _warn_unfinished(quantized)
    plain = quantized.stripped
    codebooks, learned = quantized.codebooks, quantized.activation_ranges
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
    input_range: tuple[float, float] | None = None,
    check: bool = True,
    int8_io: bool = True,
    ranges: str = "learned",
    calibration_samples: int = CALIBRATION_SAMPLES,
    atol: float = FLOAT_ATOL,
    max_steps: float = MAX_STEPS,
    min_agreement: float = MIN_AGREEMENT,
) -> ExportReport:
    """Writes ``model`` (a UNIQ-quantized tf_keras model) as a verified TFLite file.

    The quantization wrappers are stripped first (``uniq_tf.strip_quantization``: kernels hold
    their codebook values, activations float), then converted (see :mod:`tflite_export.convert`
    for the modes).

    Args:
        model: a quantized model from ``uniq_tf.quantize_model``, or its
            ``uniq_tf.QuantizedModel`` (a plain float model is exported as it is, with a
            warning).
        path: the output file; written atomically, an existing file is replaced only by a
            file that passed verification.
        mode: "float", "dynamic" or "int8" (full integer).
        representative_data: inputs for int8 calibration (required for "int8"), in any form
            of :mod:`uniq_tf.inputs` (an array, an (x, y) tuple, a tf.data.Dataset, an
            iterable of batches or a converter-style generator function). Up to
            ``calibration_samples`` are used.
        samples: inputs to verify on, in the same forms (default: the first 256
            representative samples, else 32 uniform random inputs in ``input_range``).
        input_range: (lo, hi) of the model's inputs, for the random inputs verified on when
            there are no samples nor representative data (default [0, 1]; the report says
            where its samples came from).
        check: run the file in LiteRT against the Keras model before it replaces ``path``;
            False writes it unchecked (the report says so).
        int8_io: "int8" mode only: int8 model input and output (else float32, with quantize
            and dequantize ops inside the file).
        ranges: "int8" mode only: "learned" writes the activation quantizers' learned ranges
            where the model has them (the representative data calibrates the other tensors:
            the input, the logits); "calibrated" uses the converter's calibration everywhere.
        atol: float mode tolerance, relative to max(1, max |output|).
        max_steps: int8 mode tolerance, in steps of the file's output quantization.
        min_agreement: minimal top-1 agreement (classifiers, rows without a near tie).

    Returns:
        An :class:`ExportReport`: the file's size, its input and output types, and what was
        checked against the Keras model (samples, largest difference, tolerance, agreement,
        kernels, activation ranges).

    Raises:
        ValueError: a bad argument, representative or sample data that is empty, non-finite,
            constant or of the wrong shape (nothing is written).
        ExportPathError: ``path`` cannot be written (nothing is written).
        ConversionError: the TFLite converter rejected the model (its message, with the layers).
        VerificationError: the converted file differs from the Keras model beyond the
            tolerance, or holds non-finite outputs; an older file at ``path`` is untouched.
    """
    source = _check_model(model)
    model = source.model if isinstance(source, QuantizedModel) else source
    _check_args(mode, ranges, calibration_samples, atol, max_steps, min_agreement)
    checks.check_bool(check, "check")
    if input_range is not None:
        input_range = tuple(checks.check_number(v, "input_range") for v in input_range)
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
    if calibration is not None and mode == "int8":
        _check_not_constant(calibration)
    checked, source_text = _verification_samples(model, samples, calibration, input_range)
    plain, codebooks, learned, reference_model, reference = _plan(source, mode, ranges)
    content, range_uses = convert(
        plain, mode, calibration, int8_io, learned if ranges == "learned" else None
    )
    if mode == "int8" and ranges == "calibrated" and learned:
        range_uses = ranges_in_file(content, learned)

    hint = _uncalibrated_hint(mode, learned)
    if not check:
        return _unchecked(path, mode, content, reference, int8_io)
    expected = reference_model.predict(checked, verbose=0, batch_size=VERIFY_SAMPLES)
    _check_finite_outputs(expected, f"The {reference}", path, hint)
    with atomic_output(path) as temp:
        write_bytes(temp, content)
        got = _run(temp, checked, mode, path, hint)
        _check_finite_outputs(got, f"The {mode} TFLite file", path, hint)
        input_quantization, output_step = runtime.io_quantization(temp)
        input_levels, input_clipped = _input_fit(checked, input_quantization)
        input_dtype, output_dtype = runtime.io_types(temp)
        tolerance = _tolerance(mode, expected, output_step, atol, max_steps)
        agreement, clear_rows, clear_agreement = _agreement(expected, got, tolerance)
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
            tolerance=tolerance,
            outliers=_outliers(expected, got, tolerance),
            output_step=output_step if mode == "int8" else None,
            top1_agreement=agreement,
            clear_rows=clear_rows,
            clear_agreement=clear_agreement,
            input_levels=input_levels,
            input_clipped=input_clipped,
            kernels=kernels.check_kernels(temp, codebooks),
            activation_ranges=range_uses,
            samples_source=source_text,
        )
        _verify(report, min_agreement, hint)
    return report


def _unchecked(path, mode: str, content: bytes, reference: str, int8_io: bool) -> ExportReport:
    """Writes ``content`` to ``path`` without running it (check=False)."""
    with atomic_output(path) as temp:
        write_bytes(temp, content)
        input_dtype, output_dtype = runtime.io_types(temp)
    return ExportReport(
        path=os.fspath(path), mode=mode, size_bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9)), input_dtype=input_dtype,
        output_dtype=output_dtype, runtime=runtime.RUNTIME, reference=reference,
        samples_checked=0, max_abs_diff=None, tolerance=None, outliers=None, output_step=None,
        top1_agreement=None, samples_source="unchecked (check=False)")


def _run(path, samples: np.ndarray, mode: str, final_path, hint: str) -> np.ndarray:
    """The file's outputs on ``samples``; a LiteRT failure becomes a VerificationError."""
    try:
        return runtime.predict(path, samples)
    except (RuntimeError, ValueError) as error:
        raise VerificationError(
            f"LiteRT cannot run the {mode} TFLite file for {os.fspath(final_path)!r} on the "
            f"samples: {str(error).rstrip('.')}.{hint} Nothing was written."
        ) from error
