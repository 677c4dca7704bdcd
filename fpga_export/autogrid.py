"""Each layer's integer grid width B chosen by measured accuracy (``weight_grid_bits="auto"``).

The search is greedy, layer by layer in forward order. Every layer starts at its fallback
width: the grid it was fine-tuned on (``uniq_tf.set_grid_bits``), else the level-error rule of
:mod:`fpga_export.grid` (1% of the smallest level gap). Then, for each layer in turn, the
widths max(b, 2), max(b, 2) + 1, ..., B_current - 1 are tried in that order with every other
layer at its current width, and the first one whose model stays within the tolerance is kept.
At most sum over layers of (B_fallback - max(b, 2)) forward passes over the data.

The model scored at each step is the Keras grid-snapped reference of :mod:`fpga_export.check`
(every kernel holding its codebook's grid values s * n, fed the input as the bundle's input
Quant rounds it): it computes what the exported graph computes, up to float summation order,
without building ONNX. It is scored against the quantized Keras model as it is, fed the raw
input:

    agreement   fraction of examples whose top-1 class is the Keras model's;
                within tolerance when >= 1 - tolerance
    accuracy    top-1 accuracy on the labels; within tolerance when >= Keras's - tolerance
    loss        mean of the model's compiled loss on the labels; within tolerance when
                <= Keras's + tolerance * |Keras's|
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from fpga_export import check, grid
from fpga_export.actquant import QuantParams
from uniq_tf._keras import keras
from uniq_tf.util import inputs

METRICS = ("agreement", "accuracy", "loss")
DEFAULT_TOLERANCE = 0.005
SEARCH = ("greedy per layer in forward order from the fallback widths; for each layer the "
          "smallest width >= max(b, 2) within tolerance, the other layers at their current "
          "widths; scored with the Keras grid-snapped reference (fpga_export.check)")
_BATCH = 256


@dataclass
class _Scorer:
    """Scores a model's outputs with ``metric`` against the Keras model's on the same data."""

    metric: str
    tolerance: float
    reference: np.ndarray
    labels: np.ndarray | None
    loss: object | None

    def score(self, outputs: np.ndarray) -> float:
        if self.metric == "agreement":
            return float(np.mean(outputs.argmax(-1) == self.reference.argmax(-1)))
        if self.metric == "accuracy":
            return float(np.mean(outputs.argmax(-1) == self.labels.reshape(-1)))
        return float(np.mean(self.loss(self.labels, outputs)))

    def keras_score(self) -> float:
        return self.score(self.reference)

    def within(self, value: float, keras_value: float) -> bool:
        if self.metric == "agreement":
            return value >= 1.0 - self.tolerance
        if self.metric == "accuracy":
            return value >= keras_value - self.tolerance
        return value <= keras_value + self.tolerance * abs(keras_value)


def _split(data) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) as whole arrays from ``data`` in any form of :mod:`uniq_tf.inputs`."""
    xs, ys = [], []
    for x, y in inputs.batches(data, None, "validation_data"):
        xs.append(np.asarray(x, np.float32))
        ys.append(None if y is None else np.asarray(y))
    if not xs:
        return np.zeros((0,), np.float32), None
    labelled = [y is not None for y in ys]
    if any(labelled) and not all(labelled):
        raise ValueError("validation_data: some batches have labels and some do not.")
    return np.concatenate(xs), (np.concatenate(ys) if all(labelled) else None)


def _scorer(model, x, y, metric: str, tolerance: float) -> _Scorer:
    if metric not in METRICS:
        raise ValueError(f"validation_metric must be one of {METRICS}, got {metric!r}")
    if metric != "agreement" and y is None:
        raise ValueError(
            f"validation_metric={metric!r} needs labels: pass validation_data=(x, y), or use "
            "'agreement' with inputs only")
    loss = None
    if metric == "loss":
        if getattr(model, "loss", None) is None or isinstance(model.loss, (dict, list, tuple)):
            raise ValueError(
                f"validation_metric='loss' uses the compiled loss of model {model.name!r}, which "
                "has none (or one per output); compile it with a single loss, or use "
                "'agreement' or 'accuracy'")
        loss = keras.losses.get(model.loss)
    reference = model.predict(x, batch_size=_BATCH, verbose=0)
    return _Scorer(metric, tolerance, reference, y, loss)


def choose_grid_bits(
    model,
    codebooks: dict,
    fallback: dict[str, grid.IntegerGrid],
    input_quant: QuantParams,
    data,
    tolerance: float = DEFAULT_TOLERANCE,
    metric: str = "agreement",
) -> tuple[dict[str, grid.IntegerGrid], dict]:
    """The grids of the search in the module docstring, and its record.

    Args:
        model: the quantized Keras model.
        codebooks: ``uniq_tf.get_codebooks(model)``.
        fallback: codebook key -> the grid the search starts from.
        input_quant: the bundle's input quantizer.
        data: inputs in any form of :mod:`uniq_tf.inputs`: x, an (x, y) tuple (labels for
            "accuracy" and "loss"), a tf.data.Dataset or an iterable of batches.
        tolerance: how far from the Keras model the score may go (module docstring).
        metric: "agreement", "accuracy" or "loss".

    Returns:
        (codebook key -> chosen grid, record): the record holds the metric, tolerance, sample
        count, the search, the Keras model's score and the score and widths at the fallback
        and at the chosen grids, and the number of forward passes.

    Raises:
        ValueError: an unknown metric, labels missing for "accuracy"/"loss", an uncompiled
            model for "loss", or empty data.
    """
    x, y = _split(data)
    if len(x) == 0:
        raise ValueError("validation_data holds no examples")
    scorer = _scorer(model, x, y, metric, tolerance)
    keras_value = scorer.keras_score()
    copy = check.float_weight_copy(model)
    x_in = input_quant.apply(x)
    current = dict(fallback)

    def evaluate(grids: dict[str, grid.IntegerGrid]) -> float:
        check.set_kernels(copy, codebooks, {
            key: check.snapped_kernel(codebooks[key], g.values()) for key, g in grids.items()})
        return scorer.score(copy.predict(x_in, batch_size=_BATCH, verbose=0))

    fallback_value = evaluate(current)
    passes = 1
    if not scorer.within(fallback_value, keras_value):
        warnings.warn(
            f"at the fallback grid widths the exported model's {metric} is {fallback_value:.4g} "
            f"against the Keras model's {keras_value:.4g}, outside tolerance={tolerance}; the "
            "search keeps them for the layers where no narrower width is within it",
            stacklevel=3,
        )
    chosen_value = fallback_value
    for key, start in fallback.items():
        for bits in range(max(codebooks[key].bits, 2), start.bits):
            trial = {**current, key: grid.snap_rows(np.atleast_2d(codebooks[key].levels), bits)}
            value = evaluate(trial)
            passes += 1
            if scorer.within(value, keras_value):
                current, chosen_value = trial, value
                break
    record = {
        "rule": "validation",
        "metric": metric,
        "tolerance": tolerance,
        "samples": int(len(x)),
        "search": SEARCH,
        "keras": keras_value,
        "fallback": {"bits": {k: g.bits for k, g in fallback.items()}, "score": fallback_value},
        "chosen": {"bits": {k: g.bits for k, g in current.items()}, "score": chosen_value},
        "forward_passes": passes,
    }
    return current, record
