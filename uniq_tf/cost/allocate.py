"""Mixed precision under a budget: per-layer bit widths chosen for a BOPs or memory target.

:func:`allocate_bits` answers "the most accurate plan that fits in N BOPs (or N bytes of
weights)" in three steps (docs/method.md, "Mixed precision under a budget"):

1. **Sensitivity, measured.** For every kernel layer j and candidate pair c = (w, a), only
   layer j is quantized: its kernel hard k-quantile at w bits (``kquantile.quantize`` on a
   copy) and the activation quantizers it owns (``layer_bits`` semantics: those after it, up
   to the next kernel layer) at a bits, calibrated on the same batches; every other layer
   stays float. s_j(c) is how far the model's outputs move from the float model's on a few
   batches of ``data``, by a measure that fits each output (:data:`MEASURES`), summed over
   the outputs: the KL divergence of a classifier's distribution (softmax outputs, or
   logits), the output error scaled by the output's variance for regression and multi-label
   (sigmoid) outputs, or the increase of the model's compiled loss (``metric="loss"``, with
   labels). ``metric="auto"`` reads each output's kind from the compiled loss, else from its
   activation: softmax -> KL; sigmoid or a single unit -> scaled error; several linear units
   -> KL on logits (the report says which it used).
2. **Cost, as** :func:`uniq_tf.summary` **counts it.** A layer's BOPs depend on its weight
   width and on the width of its input, i.e. on the activation bits of the layer(s) upstream
   (merges take the widest); the graph is probed once to find those sources, so the plan's
   cost equals what ``uniq_tf.summary(model, layer_bits=plan)`` reports. Weight memory is
   the summary's (kernels at w bits, codebooks, everything else at 32 bits).
3. **An exact choice.** A mixed-integer program (``scipy.optimize.milp``) picks one pair per
   layer minimizing sum_j s_j(c_j) under the budgets. The objective assumes the layers'
   sensitivities add up (they are measured one layer at a time); the budgets are exact.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from uniq_tf import internals
from uniq_tf._keras import require_keras2_model, tf
from uniq_tf.cost import bops
from uniq_tf.integration import plan as planning
from uniq_tf.integration import registry
from uniq_tf.integration.apply import quantize_annotated
from uniq_tf.integration.configs import KernelQuantizeConfig
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
from uniq_tf.method.settings import (
    ACTIVATION_BITS_RANGE,
    DEFAULTS,
    WEIGHT_BITS_RANGE,
    UniqSettings,
    check_activation_bits,
    check_weight_bits,
)
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
# Activation widths the graph is probed with: the lowest and highest quantize_model accepts.
_LOW, _HIGH = ACTIVATION_BITS_RANGE
_PROBE_WEIGHT_BITS = 8
OBJECTIVE_SCALE = 1e6
MAX_CUTS = 50
Pair = tuple[int, int | None]


# --------------------------------------------------------------------------- the cost model


@dataclasses.dataclass(frozen=True)
class CostRow:
    """One call of an allocatable kernel layer: its BOPs are a function of the layer's weight
    width and of its input width max(``const_bits``, activation bits of ``sources``)."""

    position: int
    layer: str
    parts: tuple[dict, ...]
    const_bits: int
    sources: tuple[str, ...]
    memory_bits: Mapping[int, float]

    def bops(self, weight_bits: int, input_bits: int) -> float:
        """The row's BOPs (bops.conv_bops per part; a second part, SeparableConv2D's
        pointwise stage, keeps its own input width)."""
        return sum(
            bops.conv_bops(p["m"], p["n"], p["k_h"], p["k_w"], weight_bits,
                           input_bits if i == 0 else p["activation_bits"], p["positions"],
                           p["groups"])
            for i, p in enumerate(self.parts)
        )

    def input_bits(self, plan: Mapping[str, Pair]) -> int:
        return max([self.const_bits, *(plan[s][1] for s in self.sources)])


@dataclasses.dataclass
class CostModel:
    """BOPs and weight memory of every plan over ``candidates`` (layer -> allowed pairs).

    ``fixed_plan`` pins activation layers that no kernel layer owns (before the first one);
    ``fixed`` holds the (BOPs, memory bits) of the summary rows no choice changes, by position.
    """

    candidates: dict[str, list[Pair]]
    rows: list[CostRow]
    fixed_plan: dict[str, Pair]
    fixed: dict[int, tuple[float, float]]

    @property
    def fixed_bops(self) -> float:
        return sum(b for b, _ in self.fixed.values())

    @property
    def fixed_memory_bits(self) -> float:
        return sum(m for _, m in self.fixed.values())

    def layer_costs(self, plan: Mapping[str, Pair]) -> dict[str, tuple[float, float]]:
        """Layer -> (BOPs, weight memory bits) under ``plan``."""
        out = dict.fromkeys(self.candidates, (0.0, 0.0))
        for row in self.rows:
            w = plan[row.layer][0]
            b, m = out[row.layer]
            out[row.layer] = (b + row.bops(w, row.input_bits(plan)), m + row.memory_bits[w])
        return out

    def totals(self, plan: Mapping[str, Pair]) -> tuple[float, float]:
        """(total BOPs, total weight memory bits) of the model under ``plan``, summed in the
        summary's row order: equal to its totals to the last bit."""
        values = dict(self.fixed)
        for row in self.rows:
            w = plan[row.layer][0]
            values[row.position] = (row.bops(w, row.input_bits(plan)), row.memory_bits[w])
        ordered = [values[i] for i in sorted(values)]
        return sum(b for b, _ in ordered), sum(m for _, m in ordered)

    def cheapest(self) -> dict[str, Pair]:
        """The plan with the fewest BOPs and the least memory (both grow with every width)."""
        return {name: min(pairs, key=lambda p: (p[0], p[1] or 0))
                for name, pairs in self.candidates.items()}


def _summary(model, layer_bits, skip_layers, per_channel, input_bits):
    return bops.summary(model, _PROBE_WEIGHT_BITS, _HIGH, layer_bits=layer_bits,
                        skip_layers=skip_layers, per_channel=per_channel, input_bits=input_bits)


def _base_name(row_name: str) -> str:
    return row_name.split("[call ")[0]


def cost_model(
    model, candidates: Mapping[str, Sequence[Pair]], fixed_plan: Mapping[str, Pair],
    skip_layers: Iterable[str] = (), per_channel: bool = False, input_bits: int = 8,
) -> CostModel:
    """Probes ``model``'s graph with :func:`uniq_tf.summary`: once with every activation at
    the lowest width, once per owning layer with its activations at the highest (a row whose
    input then reaches the highest width has that layer among its sources), once per weight
    width for the memory. ``len(candidates) + len(weight widths) + 1`` summaries."""
    skip_layers = tuple(skip_layers)

    def probe(weight_bits=_PROBE_WEIGHT_BITS, high=None):
        plan = {name: (weight_bits, _HIGH if name == high else _LOW) for name in candidates}
        return _summary(model, {**plan, **fixed_plan}, skip_layers, per_channel,
                        input_bits).layers

    base = probe()
    sources: dict[int, list[str]] = {i: [] for i, row in enumerate(base)}
    for name, pairs in candidates.items():
        if all(a is None for _, a in pairs):
            continue
        for i, row in enumerate(probe(high=name)):
            if base[i]["activation_bits"] != _HIGH and row["activation_bits"] == _HIGH:
                sources[i].append(name)
    widths = sorted({w for pairs in candidates.values() for w, _ in pairs})
    memory = {w: [row["weight_memory_bits"] for row in probe(weight_bits=w)] for w in widths}
    rows, fixed = [], {}
    for i, row in enumerate(base):
        layer = _base_name(row["name"])
        if layer not in candidates:
            fixed[i] = (row["bops"], row["weight_memory_bits"])
            continue
        rows.append(CostRow(i, layer, tuple(row["parts"]), int(row["activation_bits"]),
                            tuple(sources[i]), {w: memory[w][i] for w in widths}))
    return CostModel({k: list(v) for k, v in candidates.items()}, rows, dict(fixed_plan),
                     fixed)


# --------------------------------------------------------------------------- the integer program


class _Program:
    """Variables and constraint rows of the MILP, built by name."""

    def __init__(self):
        self.index: dict = {}
        self.integral: list[int] = []
        self.objective: list[float] = []
        self.rows: list[tuple[dict, float, float]] = []

    def var(self, key, objective: float = 0.0, integral: bool = True) -> int:
        self.index[key] = len(self.objective)
        self.objective.append(objective)
        self.integral.append(int(integral))
        return self.index[key]

    def add(self, coefficients: dict, lower: float, upper: float) -> None:
        self.rows.append((coefficients, lower, upper))

    def solve(self) -> np.ndarray:
        from scipy.optimize import Bounds, LinearConstraint, milp

        matrix = np.zeros((len(self.rows), len(self.objective)))
        for r, (coefficients, _, _) in enumerate(self.rows):
            for column, value in coefficients.items():
                matrix[r, column] += value
        result = milp(
            np.array(self.objective), integrality=np.array(self.integral),
            bounds=Bounds(0, 1),
            constraints=LinearConstraint(matrix, [r[1] for r in self.rows],
                                         [r[2] for r in self.rows]),
            options={"mip_rel_gap": 0.0},
        )
        if result.x is None:
            raise RuntimeError(f"scipy.optimize.milp found no plan: {result.message}")
        return result.x


def _scaled(candidates, sensitivity) -> dict:
    """Sensitivities minus each layer's smallest (a constant: one pair per layer), scaled to a
    largest of OBJECTIVE_SCALE, so that HiGHS's absolute gap (1e-6, not an option of milp)
    is negligible and the optimum exact."""
    shifted = {j: {c: sensitivity[j][c] - min(sensitivity[j][p] for p in pairs)
                   for c in pairs} for j, pairs in candidates.items()}
    top = max((v for row in shifted.values() for v in row.values()), default=0.0)
    factor = OBJECTIVE_SCALE / top if top > 0 else 1.0
    return {j: {c: v * factor for c, v in row.items()} for j, row in shifted.items()}


def _program(costs: CostModel, sensitivity, max_bops, max_memory_bits) -> _Program:
    """x[j, c] one-hot per layer; per row with sources, t[r, b] one-hot over its input width
    (b >= each source's width: exact at the optimum, a wider b only costs more) and z[r, w, b]
    = x-weight-marginal times t, forced by its two marginals."""
    prog = _Program()
    objective = _scaled(costs.candidates, sensitivity)
    for j, pairs in costs.candidates.items():
        ones = {prog.var(("x", j, c), objective[j][c]): 1.0 for c in pairs}
        prog.add(ones, 1, 1)
    bops_terms: dict = {}
    memory_terms: dict = {}
    for r, row in enumerate(costs.rows):
        pairs = costs.candidates[row.layer]
        for c in pairs:
            column = prog.index[("x", row.layer, c)]
            memory_terms[column] = memory_terms.get(column, 0.0) + row.memory_bits[c[0]]
        if not row.sources:
            for c in pairs:
                column = prog.index[("x", row.layer, c)]
                bops_terms[column] = bops_terms.get(column, 0.0) + row.bops(c[0], row.const_bits)
            continue
        levels = sorted({a for s in row.sources for _, a in costs.candidates[s]})
        widths = sorted({max(row.const_bits, a) for a in levels})
        t = {b: prog.var(("t", r, b)) for b in widths}
        prog.add(dict.fromkeys(t.values(), 1.0), 1, 1)
        for s in row.sources:
            for a in levels:
                covered = {t[b]: 1.0 for b in widths if b >= max(row.const_bits, a)}
                for c in costs.candidates[s]:
                    if c[1] >= a:
                        covered[prog.index[("x", s, c)]] = -1.0
                prog.add(covered, 0, np.inf)
        weights = sorted({w for w, _ in pairs})
        z = {(w, b): prog.var(("z", r, w, b), integral=False) for w in weights for b in widths}
        for w in weights:
            marginal = {z[w, b]: 1.0 for b in widths}
            for c in pairs:
                if c[0] == w:
                    marginal[prog.index[("x", row.layer, c)]] = -1.0
            prog.add(marginal, 0, 0)
        for b in widths:
            prog.add({**{z[w, b]: 1.0 for w in weights}, t[b]: -1.0}, 0, 0)
        for (w, b), column in z.items():
            bops_terms[column] = row.bops(w, b)
    for terms, limit, fixed in ((bops_terms, max_bops, costs.fixed_bops),
                                (memory_terms, max_memory_bits, costs.fixed_memory_bits)):
        if limit is not None:  # scaled to 1, so the solver's tolerance is relative
            prog.add({k: v / limit for k, v in terms.items()}, -np.inf, (limit - fixed) / limit)
    return prog


def solve(
    costs: CostModel, sensitivity: Mapping[str, Mapping[Pair, float]],
    max_bops: float | None = None, max_weight_bits: float | None = None,
) -> dict[str, Pair]:
    """The plan (layer -> pair) minimizing the summed sensitivity within the budgets, exact
    (scipy.optimize.milp, relative gap 0); the caller checks the budgets are reachable.
    A plan the solver's feasibility tolerance (about 1e-6 of a budget) lets past a budget is cut
    off (that one combination) and the program solved again."""
    prog = _program(costs, sensitivity, max_bops, max_weight_bits)
    for _ in range(MAX_CUTS + 1):
        values = prog.solve()
        chosen = {j: next(c for c in pairs if values[prog.index[("x", j, c)]] > 0.5)
                  for j, pairs in costs.candidates.items()}
        total_bops, total_bits = costs.totals(chosen)
        if (max_bops is None or total_bops <= max_bops) and (
                max_weight_bits is None or total_bits <= max_weight_bits):
            return chosen
        prog.add({prog.index[("x", j, c)]: 1.0 for j, c in chosen.items()}, -np.inf,
                 len(chosen) - 1)
    raise RuntimeError(f"scipy.optimize.milp returned {MAX_CUTS + 1} plans over the budget "
                       "by less than its tolerance; raise the budget by 1e-6 of itself")


# --------------------------------------------------------------------------- sensitivity


def _batches(data, batches: int, model=None) -> list[tuple[tf.Tensor, object]]:
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
    batch_list = _batches(data, batches, model)
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


# --------------------------------------------------------------------------- the front door


@dataclasses.dataclass
class AllocationReport:
    """What :func:`allocate_bits` chose and why: per layer (forward order) the pair, its
    measured sensitivity, BOPs and weight bytes under the plan, and every candidate's
    sensitivity; the totals against the budgets; what the measurement cost."""

    model: str
    metric: str
    layers: list[dict]
    total_bops: float
    total_weight_bytes: float
    max_bops: float | None
    max_weight_bytes: float | None
    forward_passes: int
    seconds: float
    measures: list[dict] = dataclasses.field(default_factory=list)

    @property
    def predicted_sensitivity(self) -> float:
        """The objective: the sum of the chosen pairs' sensitivities."""
        return sum(row["sensitivity"] for row in self.layers)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "predicted_sensitivity": self.predicted_sensitivity}

    def table(self) -> str:
        """Per-layer choices and totals against the budgets, as text."""
        header = ("Layer", "W bits", "A bits", f"Sensitivity ({self.metric})", "BOPs",
                  "W bytes")
        cells = [(row["name"], str(row["weight_bits"]),
                  "-" if row["activation_bits"] is None else str(row["activation_bits"]),
                  f"{row['sensitivity']:.4g}", bops.si(row["bops"]),
                  bops.si(row["weight_bytes"])) for row in self.layers]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

        def line(values):
            return "  ".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}"
                             for i, (v, w) in enumerate(zip(values, widths, strict=True)))

        rule = "-" * len(line(header))
        return "\n".join([
            f"Bit allocation of {self.model!r}: {self.forward_passes} forward passes, "
            f"{self.seconds:.1f} s ('A bits -': the layer owns no activation quantizer)",
            rule, line(header), rule, *(line(c) for c in cells), rule,
            f"Total BOPs: {self.total_bops:.6g}{_budget_text(self.total_bops, self.max_bops)}",
            f"Weight memory: {self.total_weight_bytes:.6g} bytes"
            f"{_budget_text(self.total_weight_bytes, self.max_weight_bytes)}",
            f"Predicted sensitivity (sum over layers): {self.predicted_sensitivity:.4g}",
            *(f"Sensitivity of output {m['output']!r}: {MEASURES[m['measure']]} ({m['why']})"
              for m in self.measures),
        ])

    __str__ = table


def _budget_text(used: float, budget: float | None) -> str:
    if budget is None:
        return " (no budget)"
    return f" of a budget of {budget:.6g} ({100 * used / budget:.1f} %)"


def _check_widths(values, check, allowed: tuple[int, int], what: str) -> tuple[int, ...]:
    if checks.is_integer(values) or not isinstance(values, Iterable):
        raise ValueError(f"{what} must be a sequence of bit widths, e.g. (2, 4, 8); got "
                         f"{values!r}")
    checked = tuple(sorted({check(v, what) for v in values}))
    if not checked:
        raise ValueError(f"{what} must list at least one bit width in "
                         f"{allowed[0]}..{allowed[1]}")
    return checked


def _check_budget(value, what: str) -> float | None:
    return None if value is None else checks.check_number(value, what, positive=True)


def _candidates(model, weight_bits, activation_bits, pinned, skip_layers):
    """(layer -> allowed pairs, the pinned plan of activation layers no kernel layer owns)."""
    configs = planning.plan(model, planning.annotations_for(model, None, skip_layers),
                            UniqSettings(weight_bits[-1], activation_bits[-1]))
    owners = {getattr(c, "owner", None) for c in configs.values()
              if getattr(c, "activation_bits", None) is not None}
    kernel_layers = [n for n, c in configs.items() if isinstance(c, KernelQuantizeConfig)]
    for name in pinned:
        if name not in kernel_layers:
            raise ValueError(
                f"layer_bits[{name!r}]: allocate_bits pins kernel layers only "
                f"(of {kernel_layers}); an activation layer takes the activation bits of the "
                "kernel layer before it" + (" and skipped layers stay float"
                                            if name in skip_layers else ""))
    candidates = {}
    for name in kernel_layers:
        w_pin, a_pin = pinned.get(name, (None, None))
        ws = weight_bits if w_pin is None else (w_pin,)
        if name not in owners:
            candidates[name] = [(w, None) for w in ws]
        else:
            candidates[name] = [(w, a) for w in ws
                                for a in (activation_bits if a_pin is None else (a_pin,))]
    fixed = {n: (None, activation_bits[-1]) for n, c in configs.items()
             if not isinstance(c, KernelQuantizeConfig) and c.owner is None}
    return candidates, fixed


def _check_reachable(costs: CostModel, max_bops, max_weight_bytes) -> None:
    cheapest = costs.cheapest()
    low_bops, low_bits = costs.totals(cheapest)
    widths = sorted({f"W{w}A{'-' if a is None else a}" for w, a in cheapest.values()})
    if max_bops is not None and max_bops < low_bops:
        raise ValueError(
            f"max_bops={max_bops:.6g} is below the smallest plan's {low_bops:.6g} BOPs (every "
            f"layer at its narrowest candidate: {', '.join(widths)}); raise the budget or "
            "allow narrower weight_bits/activation_bits.")
    if max_weight_bytes is not None and max_weight_bytes * 8 < low_bits:
        raise ValueError(
            f"max_weight_bytes={max_weight_bytes:.6g} is below the smallest plan's "
            f"{low_bits / 8:.6g} bytes of weights (every layer at its narrowest weight_bits; "
            "batch norm, biases and codebook entries count 32 bits); raise the budget or allow "
            "narrower weight_bits.")


def check_budget(
    model,
    *,
    max_bops: float | None = None,
    max_weight_bytes: float | None = None,
    weight_bits: Sequence[int] = (2, 3, 4, 8),
    activation_bits: Sequence[int] = (4, 8),
    layer_bits: Mapping[str, tuple[int | None, int | None]] | None = None,
    skip_layers: Iterable[str] = (),
    settings: UniqSettings | None = None,
    input_bits: int = 8,
) -> CostModel:
    """The checks of :func:`allocate_bits` that need no data (run them before training).

    Args: as :func:`allocate_bits`.

    Returns:
        the :class:`CostModel` of the plans over the candidates.

    Raises:
        ValueError: as :func:`allocate_bits`, except for the data.
    """
    model = require_keras2_model(model)
    max_bops = _check_budget(max_bops, "max_bops")
    max_weight_bytes = _check_budget(max_weight_bytes, "max_weight_bytes")
    if max_bops is None and max_weight_bytes is None:
        raise ValueError("allocate_bits needs a budget: max_bops and/or max_weight_bytes")
    weight_bits = _check_widths(weight_bits, check_weight_bits, WEIGHT_BITS_RANGE, "weight_bits")
    activation_bits = _check_widths(activation_bits, check_activation_bits,
                                    ACTIVATION_BITS_RANGE, "activation_bits")
    pinned, skip_layers = planning.check_layer_overrides(model, layer_bits, skip_layers)
    candidates, fixed_plan = _candidates(model, weight_bits, activation_bits, pinned,
                                         skip_layers)
    per_channel = UniqSettings.resolve(settings).per_channel
    costs = cost_model(model, candidates, fixed_plan, skip_layers, per_channel, input_bits)
    _check_reachable(costs, max_bops, max_weight_bytes)
    return costs


def allocate_bits(
    model,
    data,
    *,
    max_bops: float | None = None,
    max_weight_bytes: float | None = None,
    weight_bits: Sequence[int] = (2, 3, 4, 8),
    activation_bits: Sequence[int] = (4, 8),
    batches: int = 4,
    metric: str = "auto",
    layer_bits: Mapping[str, tuple[int | None, int | None]] | None = None,
    skip_layers: Iterable[str] = (),
    settings: UniqSettings | None = None,
    input_bits: int = 8,
) -> tuple[dict[str, Pair], AllocationReport]:
    """Per-layer (weight, activation) bits with the least predicted loss within a budget.

    Method and assumptions in the module docstring and docs/method.md ("Mixed precision under
    a budget"). Sensitivity costs ``batches`` x (1 + len(activation_bits) + sum over layers of
    their candidate pairs) forward passes of the model (ResNet-20 with the defaults: 4 x 163);
    the cost model ``len(layers) + len(weight_bits) + 1`` calls of :func:`uniq_tf.summary`.

    Args:
        model: a built float tf_keras Sequential/Functional model with a fixed input shape.
        data: inputs in any form of :mod:`uniq_tf.util.inputs` (x, or (x, y) with labels;
            an unbatched dataset is batched); the first ``batches`` batches are used.
        max_bops: budget of the model's total BOPs as ``uniq_tf.summary`` counts them.
        max_weight_bytes: budget of the model's weight memory in bytes (the summary's: kernels
            at their widths plus codebooks, every other weight at 32 bits).
        weight_bits: candidate codebook index widths, each 1..16.
        activation_bits: candidate activation widths, each 2..16.
        batches: batches of ``data`` to measure on.
        metric: how a layer's sensitivity is measured (module docstring, :data:`MEASURES`):
            "auto" (default: by each output's compiled loss or activation), "kl" (KL
            divergence of class distributions), "mse" (output error over the output's
            variance) or "loss" (increase of the compiled loss; needs labels).
        layer_bits: kernel layers pinned to (w, a); None on a side leaves it to the choice.
        skip_layers: layers left in float (fixed cost at 32 x 32 bits).
        settings: the :class:`uniq_tf.UniqSettings` ``quantize_model`` will be called with
            (its per_channel and distribution; the bits are the candidates').
        input_bits: the model input's width for BOPs, as in ``uniq_tf.summary``.

    Returns:
        (plan, report): ``plan`` maps every kernel layer (and any activation layer before the
        first one) to (w, a), a = None where the layer owns no activation quantizer; use it
        as ``quantize_model(model, layer_bits=plan, skip_layers=skip_layers)`` and
        ``uniq_tf.summary(model, 8, 8, layer_bits=plan)`` prices it exactly as the report.
        ``report``: an :class:`AllocationReport` (``print(report)`` shows the table and the
        measure each output was scored with).

    Raises:
        ValueError: no budget; a budget below the smallest plan (naming the smallest value);
            unknown or non-kernel layer names in ``layer_bits``/``skip_layers``; bit widths
            out of range; no batch in ``data``; ``metric="loss"`` without labels or without a
            compiled loss.
    """
    start = time.perf_counter()
    model = require_keras2_model(model)
    checks.check_choice(metric, "metric", METRICS)
    batches = checks.check_positive_int(batches, "batches")
    settings = UniqSettings.resolve(settings)
    output_measures(model, metric)  # a metric the model cannot give fails before measuring
    batch_list = _batches(data, batches, model)
    costs = check_budget(model, max_bops=max_bops, max_weight_bytes=max_weight_bytes,
                         weight_bits=weight_bits, activation_bits=activation_bits,
                         layer_bits=layer_bits, skip_layers=skip_layers,
                         settings=settings, input_bits=input_bits)
    sensitivity, passes, measures = measure_sensitivity(
        model, batch_list, costs.candidates, batches=batches, metric=metric,
        skip_layers=skip_layers, settings=settings)
    plan = solve(costs, sensitivity, max_bops,
                 None if max_weight_bytes is None else 8 * max_weight_bytes)
    per_layer = costs.layer_costs(plan)
    total_bops, total_bits = costs.totals(plan)
    layers = [{
        "name": name, "weight_bits": w, "activation_bits": a,
        "sensitivity": sensitivity[name][(w, a)], "bops": per_layer[name][0],
        "weight_bytes": per_layer[name][1] / 8,
        "candidates": {f"W{cw}A{'-' if ca is None else ca}": s
                       for (cw, ca), s in sensitivity[name].items()},
    } for name, (w, a) in plan.items()]
    report = AllocationReport(
        model.name, metric, layers, total_bops, total_bits / 8, max_bops, max_weight_bytes,
        passes, round(time.perf_counter() - start, 2),
        [{"output": name, "measure": kind, "why": why} for name, kind, why in measures])
    return {**plan, **costs.fixed_plan}, report
