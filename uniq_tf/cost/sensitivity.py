"""Step 1 of :func:`uniq_tf.allocate_bits`: how much each layer's quantization at each candidate
pair moves the model's outputs (docs/method.md, "Mixed precision under a budget").

For every kernel layer j and candidate pair c = (w, a), only layer j is quantized: its kernel
hard k-quantile at w bits (``kquantile.quantize`` on a copy) and the activation quantizers it
owns (``layer_bits`` semantics: those after it, up to the next kernel layer) at a bits,
calibrated on the same batches; every other layer stays float. s_j(c) is how far the model's
outputs move from the float model's on a few batches, by a measure that fits each output
(:data:`MEASURES`), summed over the outputs: the KL divergence of a classifier's distribution
(softmax outputs, or logits), the output error scaled by the output's variance for regression
and multi-label (sigmoid) outputs, or the increase of the model's compiled loss
(``metric="loss"``, with labels). ``metric="auto"`` reads each output's kind from the compiled
loss, else from its activation: softmax -> KL; sigmoid or a single unit -> scaled error;
several linear units -> KL on logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from uniq_tf import internals
from uniq_tf._keras import tf
from uniq_tf.integration import plan as planning
from uniq_tf.integration import registry
from uniq_tf.integration.apply import quantize_annotated
from uniq_tf.integration.inspection import (
    float_kernel,
    kernel_wrappers,
    output_quantizers,
    weight_quantizers,
    wrappers,
)
from uniq_tf.integration.modes import calibrate_activations, set_activation_mode, set_weight_mode
from uniq_tf.integration.names import float_name
from uniq_tf.method import kquantile
from uniq_tf.method.quantizers import ActMode, Mode
from uniq_tf.method.settings import ACTIVATION_BITS_RANGE, DEFAULTS, UniqSettings
from uniq_tf.util import checks, inputs

METRICS = ("auto", "kl", "mse", "loss")
# What each output's sensitivity is measured with.
MEASURES = {
    "kl": "KL divergence from the float model's class distribution (softmax of logits)",
    "kl_probs": "KL divergence from the float model's class distribution (softmax outputs)",
    "mse": "mean squared output error over the float outputs' variance",
    "loss": "increase of the model's compiled loss on the labels",
}
DEFAULT_BATCH = 64
# Without an activation candidate, the quantizers are calibrated at the widest width.
_HIGH = ACTIVATION_BITS_RANGE[1]
Pair = tuple[int, int | None]


def sample_batches(data, batches: int, model=None) -> list[tuple[tf.Tensor, object]]:
    """Up to ``batches`` (inputs, labels or None) from ``data`` in any form of
    :mod:`uniq_tf.util.inputs` (an unbatched dataset is batched by the model's input rank)."""
    out = []
    for x, y in inputs.batches(data, DEFAULT_BATCH, "data", model=model):
        if len(out) == batches:
            break
        out.append((tf.convert_to_tensor(x),
                    None if y is None else tf.nest.map_structure(tf.convert_to_tensor, y)))
    if not out:
        raise ValueError(
            "allocate_bits got no batch from `data` (an empty dataset, iterable or array); "
            "sensitivity is measured on a few batches of inputs (or (inputs, labels) pairs)."
        )
    return out


def _outputs(values) -> list[tf.Tensor]:
    return [tf.cast(v, tf.float64) for v in tf.nest.flatten(values)]


def _compiled_losses(model) -> list:
    """The compiled loss of each output (None where there is none, or the model is not
    compiled)."""
    loss = getattr(model, "loss", None)
    count = len(model.outputs)
    if loss is None:
        return [None] * count
    if isinstance(loss, dict):
        return [loss.get(name) for name in model.output_names]
    if isinstance(loss, (list, tuple)):
        return list(loss) + [None] * (count - len(loss))
    return [loss] * count


def _loss_kind(loss) -> str | None:
    """"kl" / "kl_probs" for a categorical cross-entropy, "mse" for any other known loss."""
    if loss is None:
        return None
    name = loss if isinstance(loss, str) else (
        getattr(loss, "name", None) or getattr(loss, "__name__", "") or type(loss).__name__)
    name = str(name).lower()
    if "categorical_crossentropy" in name or "categoricalcrossentropy" in name:
        from_logits = bool(getattr(loss, "from_logits", False) or
                           getattr(loss, "_fn_kwargs", {}).get("from_logits", False))
        return "kl" if from_logits else "kl_probs"
    return "mse"


def output_measures(model, metric: str = "auto") -> list[tuple[str, str, str]]:
    """(output name, measure, why) per output of ``model``: the measure of :data:`MEASURES`
    its sensitivity is taken with under ``metric`` (module docstring, step 1).

    Raises:
        ValueError: an unknown metric, or ``metric="loss"`` for a model without a compiled
            loss.
    """
    checks.check_choice(metric, "metric", METRICS)
    names = list(getattr(model, "output_names", None) or
                 [f"output_{i}" for i in range(len(model.outputs))])
    if metric == "loss":
        if getattr(model, "compiled_loss", None) is None:
            raise ValueError(
                f'metric="loss" measures the increase of the compiled loss, but model '
                f"{model.name!r} is not compiled; compile it with the loss it was trained "
                'with, or use metric="auto"')
        return [(name, "loss", "the compiled loss") for name in names]
    out = []
    for name, tensor, loss in zip(names, model.outputs, _compiled_losses(model), strict=True):
        if metric != "auto":
            kind, why = metric, f'metric="{metric}"'
            if metric == "kl" and _activation(tensor) == "softmax":
                kind = "kl_probs"
        elif _loss_kind(loss) is not None:
            kind, why = _loss_kind(loss), "the compiled loss"
        else:
            kind, why = _measure_from_output(tensor)
        out.append((name, kind, why))
    return out


def _activation(tensor) -> str | None:
    layer = internals.keras_history(tensor).layer
    return registry.activation_name(layer)


def _measure_from_output(tensor) -> tuple[str, str]:
    activation = _activation(tensor)
    units = tensor.shape[-1]
    if activation == "softmax":
        return "kl_probs", "a softmax output"
    if activation == "sigmoid":
        return "mse", "a sigmoid (multi-label) output"
    if units == 1 or units is None:
        return "mse", "a single linear unit (regression)"
    return "kl", f"{units} linear units, taken as logits (pass metric=\"mse\" for regression)"


def _log_probs(output: tf.Tensor, kind: str) -> tf.Tensor:
    if kind == "kl":
        return tf.nn.log_softmax(output, axis=-1)
    return tf.math.log(tf.clip_by_value(output, 1e-12, 1.0))


class _Scorer:
    """The sensitivity of a model's outputs against the float model's (module docstring)."""

    def __init__(self, model, reference, measures, labels):
        self.model = model
        self.kinds = [kind for _, kind, _ in measures]
        self.labels = labels
        self.reference = reference
        self.log_reference = [_log_probs(r, k) if k.startswith("kl") else None
                              for r, k in zip(reference, self.kinds, strict=True)]
        # Per output, the float outputs' variance (over examples, averaged over units),
        # floored so that a constant output does not divide by zero.
        self.variance = [
            tf.maximum(tf.reduce_mean(tf.math.reduce_variance(r, axis=0)),
                       1e-12 * tf.maximum(1.0, tf.reduce_mean(tf.square(r))))
            for r in reference
        ]
        self.base = self._loss(reference) if "loss" in self.kinds else 0.0

    def _loss(self, outputs) -> float:
        values = outputs[0] if len(outputs) == 1 else outputs
        return float(self.model.compiled_loss(self.labels, values))

    def __call__(self, outputs: list[tf.Tensor]) -> float:
        if "loss" in self.kinds:
            return self._loss(outputs) - self.base
        total = 0.0
        for output, kind, ref, log_ref, var in zip(outputs, self.kinds, self.reference,
                                                   self.log_reference, self.variance,
                                                   strict=True):
            if kind.startswith("kl"):
                log_p = _log_probs(output, kind)
                total += float(tf.reduce_mean(tf.reduce_sum(tf.exp(log_ref) * (log_ref - log_p),
                                                            -1)))
            else:
                total += float(tf.reduce_mean(tf.square(output - ref)) / var)
        return total


def _owned_quantizers(probe) -> dict[str, list[str]]:
    """Kernel layer -> the wrappers whose output quantizer it owns (layer_bits semantics)."""
    owned: dict[str, list[str]] = {}
    for wrapper in wrappers(probe):
        if output_quantizers(wrapper):
            owned.setdefault(wrapper.quantize_config.owner, []).append(wrapper.layer.name)
    return owned


def _hard_kernels(wrapper, weight_bits: int, settings: UniqSettings) -> list:
    """Assigns the hard k-quantile kernels; returns (variable, float value) to restore."""
    saved = []
    for attr, quantizer, _ in weight_quantizers(wrapper):
        variable = float_kernel(wrapper, attr)
        saved.append((variable, variable.numpy()))
        variable.assign(kquantile.quantize(variable, weight_bits, quantizer.channel_axes,
                                           settings.distribution))
    return saved


def _probe(model, activation_bits: int, skip_layers, settings: UniqSettings):
    """The model quantized at ``activation_bits`` with every quantizer off (FLOAT), its
    ranges calibrated by the caller."""
    annotations = planning.annotations_for(model, None, skip_layers)
    return quantize_annotated(model, annotations,
                              settings.replace(activation_bits=activation_bits))


def measure_sensitivity(
    model, data, candidates: Mapping[str, Sequence[Pair]], *, batches: int = 4,
    metric: str = "auto", skip_layers: Iterable[str] = (),
    settings: UniqSettings | None = None,
) -> tuple[dict[str, dict[Pair, float]], int, list[tuple[str, str, str]]]:
    """s_j(w, a) for every layer j and pair of ``candidates`` (module docstring, step 1), the
    forward passes it took (batches x (1 + activation widths + pairs)), and the measure of
    each output (:func:`output_measures`). A pair (w, None) quantizes the kernel only (the
    layer owns no activation quantizer).

    Raises:
        ValueError: no batch in ``data``; ``metric="loss"`` without labels or compiled loss.
    """
    settings = settings or DEFAULTS
    measures = output_measures(model, metric)
    batch_list = sample_batches(data, batches, model)
    labelled = all(y is not None for _, y in batch_list)
    if metric == "loss" and not labelled:
        raise ValueError('metric="loss" needs (inputs, labels) batches, and the data gave '
                         'inputs only; pass (x, y), or use metric="auto"')
    # One call on every measured example: fewer, larger forward calls.
    x_all = tf.concat([x for x, _ in batch_list], 0)
    labels = None
    if metric == "loss":
        labels = tf.nest.map_structure(lambda *ys: tf.concat(ys, 0), *[y for _, y in batch_list])
    scorer = _Scorer(model, _outputs(model(x_all, training=False)), measures, labels)
    widths = sorted({a for pairs in candidates.values() for _, a in pairs if a is not None})
    widths = widths or [_HIGH]
    out: dict[str, dict[Pair, float]] = {name: {} for name in candidates}
    passes = len(batch_list)
    for a in widths:
        probe = _probe(model, a, skip_layers, settings)
        set_weight_mode(probe, Mode.FLOAT)
        calibrate_activations(probe, [x for x, _ in batch_list], verbose=False)
        set_activation_mode(probe, ActMode.FLOAT)
        forward = tf.function(lambda batch, probe=probe: probe(batch, training=False))
        owned = _owned_quantizers(probe)
        kernels: dict[str, list] = {}  # a split SeparableConv2D: both halves
        for wrapper in kernel_wrappers(probe):
            kernels.setdefault(float_name(wrapper), []).append(wrapper)
        passes += len(batch_list)
        for name, pairs in candidates.items():
            for w, pair_a in pairs:
                if pair_a != a and not (pair_a is None and a == widths[-1]):
                    continue
                saved = [pair for wrapper in kernels[name]
                         for pair in _hard_kernels(wrapper, w, settings)]
                quantized = owned.get(name, []) if pair_a is not None else []
                if quantized:
                    set_activation_mode(probe, ActMode.QUANTIZED, quantized)
                out[name][(w, pair_a)] = scorer(_outputs(forward(x_all)))
                passes += len(batch_list)
                if quantized:
                    set_activation_mode(probe, ActMode.FLOAT, quantized)
                for variable, value in saved:
                    variable.assign(value)
    return out, passes, measures


