"""Mixed precision under a budget: per-layer bit widths chosen for a BOPs or memory target.

:func:`allocate_bits` answers "the most accurate plan that fits in N BOPs (or N bytes of
weights)" in three steps (docs/method.md, "Mixed precision under a budget"):

1. **Sensitivity, measured.** For every kernel layer j and candidate pair c = (w, a), only
   layer j is quantized: its kernel hard k-quantile at w bits (``kquantile.quantize`` on a
   copy) and the activation quantizers it owns (``layer_bits`` semantics: those after it, up
   to the next kernel layer) at a bits, calibrated on the same batches; every other layer
   stays float. s_j(c) is the mean KL divergence from the float model's output distribution
   (``metric="kl"``) or the increase of the cross-entropy (``metric="loss"``) on a few
   batches of ``data``.
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
import math
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from uniq_tf import bops, inputs, kquantile, quantize, registry
from uniq_tf._keras import require_keras2_model, tf
from uniq_tf.modes import calibrate_activations, set_activation_mode, set_weight_mode
from uniq_tf.quantize_config import KernelQuantizeConfig
from uniq_tf.quantizers import ActMode, Mode

METRICS = ("kl", "loss")
DEFAULT_BATCH = 64
# Activation widths the graph is probed with: the lowest and highest quantize_model accepts.
_LOW, _HIGH = quantize.ACTIVATION_BITS_RANGE
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


def _batches(data, batches: int) -> list[tuple[tf.Tensor, tf.Tensor | None]]:
    """Up to ``batches`` (inputs, labels or None) from a tf.data.Dataset or iterable of
    batches (x or (x, y)), an array of inputs, or an (x, y) pair of arrays."""
    out = []
    for x, y in inputs.batches(data, DEFAULT_BATCH, "data"):
        if len(out) == batches:
            break
        out.append((tf.convert_to_tensor(x), None if y is None else tf.convert_to_tensor(y)))
    if not out:
        raise ValueError(
            "allocate_bits got no batch from `data` (an empty dataset, iterable or array); "
            "sensitivity is measured on a few batches of inputs (or (inputs, labels) pairs)."
        )
    return out


def _log_probs(outputs, from_logits: bool) -> tf.Tensor:
    outputs = tf.cast(outputs, tf.float64)
    if from_logits:
        return tf.nn.log_softmax(outputs, axis=-1)
    return tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))


def _score(metric: str, log_p, reference, labels) -> float:
    """Mean KL(reference || p) per example, or the mean cross-entropy of p on ``labels``."""
    if metric == "kl":
        return float(tf.reduce_mean(tf.reduce_sum(tf.exp(reference) * (reference - log_p), -1)))
    picked = tf.gather(log_p, tf.reshape(tf.cast(labels, tf.int32), [-1, 1]), batch_dims=1)
    return float(-tf.reduce_mean(picked))


def _owned_quantizers(probe) -> dict[str, list[str]]:
    """Kernel layer -> the wrappers whose output quantizer it owns (layer_bits semantics)."""
    owned: dict[str, list[str]] = {}
    for wrapper in quantize.wrappers(probe):
        if quantize.output_quantizers(wrapper):
            owned.setdefault(wrapper.quantize_config.owner, []).append(wrapper.layer.name)
    return owned


def _hard_kernels(wrapper, weight_bits: int, per_channel: bool, distribution: str) -> list:
    """Assigns the hard k-quantile kernels; returns (variable, float value) to restore."""
    saved = []
    axes = registry.kernel_attributes(wrapper.layer)
    for attr, _, _ in quantize.weight_quantizers(wrapper):
        variable = quantize.float_kernel(wrapper, attr)
        saved.append((variable, variable.numpy()))
        variable.assign(kquantile.quantize(variable, weight_bits,
                                           axes[attr] if per_channel else None, distribution))
    return saved


def measure_sensitivity(
    model, data, candidates: Mapping[str, Sequence[Pair]], *, batches: int = 4,
    metric: str = "kl", from_logits: bool = True, skip_layers: Iterable[str] = (),
    per_channel: bool = False, distribution: str = kquantile.GAUSSIAN,
) -> tuple[dict[str, dict[Pair, float]], int]:
    """s_j(w, a) for every layer j and pair of ``candidates`` (module docstring, step 1), and
    the forward passes it took: batches x (1 + activation widths + pairs). A pair (w, None)
    quantizes the kernel only (the layer owns no activation quantizer).

    ``metric="loss"`` gives the cross-entropy increase over the float model and needs labels.
    """
    batch_list = _batches(data, batches)
    if metric == "loss" and any(y is None for _, y in batch_list):
        raise ValueError('metric="loss" needs (inputs, labels) batches; use metric="kl"')
    # One call on every measured example: fewer, larger forward calls.
    inputs = tf.concat([x for x, _ in batch_list], 0)
    labels = None if metric == "kl" else tf.concat([y for _, y in batch_list], 0)
    reference = _log_probs(model(inputs, training=False), from_logits)
    base = 0.0 if metric == "kl" else _score(metric, reference, reference, labels)
    widths = sorted({a for pairs in candidates.values() for _, a in pairs if a is not None})
    widths = widths or [_HIGH]
    out: dict[str, dict[Pair, float]] = {name: {} for name in candidates}
    passes = len(batch_list)
    for a in widths:
        probe = quantize.quantize_model(model, _PROBE_WEIGHT_BITS, a, skip_layers=skip_layers,
                                        per_channel=per_channel, distribution=distribution)
        set_weight_mode(probe, Mode.FLOAT)
        calibrate_activations(probe, [x for x, _ in batch_list], verbose=False)
        set_activation_mode(probe, ActMode.FLOAT)
        forward = tf.function(lambda batch, probe=probe: probe(batch, training=False))
        owned = _owned_quantizers(probe)
        kernels = quantize.kernel_wrappers_by_layer(probe)  # a SeparableConv2D: two halves
        passes += len(batch_list)
        for name, pairs in candidates.items():
            for w, pair_a in pairs:
                if pair_a != a and not (pair_a is None and a == widths[-1]):
                    continue
                saved = [pair for wrapper in kernels[name]
                         for pair in _hard_kernels(wrapper, w, per_channel, distribution)]
                quantized = owned.get(name, []) if pair_a is not None else []
                if quantized:
                    set_activation_mode(probe, ActMode.QUANTIZED, quantized)
                log_p = _log_probs(forward(inputs), from_logits)
                out[name][(w, pair_a)] = _score(metric, log_p, reference, labels) - base
                passes += len(batch_list)
                if quantized:
                    set_activation_mode(probe, ActMode.FLOAT, quantized)
                for variable, value in saved:
                    variable.assign(value)
    return out, passes


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
                  f"{row['sensitivity']:.4g}", bops._si(row["bops"]),
                  bops._si(row["weight_bytes"])) for row in self.layers]
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
        ])

    __str__ = table


def _budget_text(used: float, budget: float | None) -> str:
    if budget is None:
        return " (no budget)"
    return f" of a budget of {budget:.6g} ({100 * used / budget:.1f} %)"


def _check_widths(values, allowed: tuple[int, int], what: str) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)) or not isinstance(values, Iterable):
        raise ValueError(f"{what} must be a sequence of bit widths, e.g. (2, 4, 8); got "
                         f"{values!r}")
    checked = tuple(sorted({quantize._check_bits(v, allowed, what) for v in values}))
    if not checked:
        raise ValueError(f"{what} must list at least one bit width in "
                         f"{allowed[0]}..{allowed[1]}")
    return checked


def _check_budget(value, what: str) -> float | None:
    if value is None:
        return None
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _candidates(model, weight_bits, activation_bits, pinned, skip_layers):
    """(layer -> allowed pairs, the pinned plan of activation layers no kernel layer owns)."""
    configs = quantize._plan(model, weight_bits[-1], activation_bits[-1], {}, skip_layers,
                             False, kquantile.GAUSSIAN, 1.0, kquantile.PAPER)
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
    per_channel: bool = False,
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
    weight_bits = _check_widths(weight_bits, quantize.WEIGHT_BITS_RANGE, "weight_bits")
    activation_bits = _check_widths(activation_bits, quantize.ACTIVATION_BITS_RANGE,
                                    "activation_bits")
    pinned, skip_layers = quantize.check_layer_overrides(model, layer_bits, skip_layers)
    candidates, fixed_plan = _candidates(model, weight_bits, activation_bits, pinned,
                                         skip_layers)
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
    metric: str = "kl",
    from_logits: bool = True,
    layer_bits: Mapping[str, tuple[int | None, int | None]] | None = None,
    skip_layers: Iterable[str] = (),
    per_channel: bool = False,
    distribution: str = kquantile.GAUSSIAN,
    input_bits: int = 8,
) -> tuple[dict[str, Pair], AllocationReport]:
    """Per-layer (weight, activation) bits with the least predicted loss within a budget.

    Method and assumptions in the module docstring and docs/method.md ("Mixed precision under
    a budget"). Sensitivity costs ``batches`` x (1 + len(activation_bits) + sum over layers of
    their candidate pairs) forward passes of the model (ResNet-20 with the defaults: 4 x 163);
    the cost model ``len(layers) + len(weight_bits) + 1`` calls of :func:`uniq_tf.summary`.

    Args:
        model: a built float tf_keras Sequential/Functional model with a fixed input shape.
        data: a tf.data.Dataset or iterable of batches (x or (x, y)), an array of inputs, or
            an (x, y) pair of arrays; the first ``batches`` batches are used.
        max_bops: budget of the model's total BOPs as ``uniq_tf.summary`` counts them.
        max_weight_bytes: budget of the model's weight memory in bytes (the summary's: kernels
            at their widths plus codebooks, every other weight at 32 bits).
        weight_bits: candidate codebook index widths, each 1..16.
        activation_bits: candidate activation widths, each 2..16.
        batches: batches of ``data`` to measure on.
        metric: "kl" (mean KL divergence from the float model's outputs; needs no labels) or
            "loss" (increase of the cross-entropy; needs labels).
        from_logits: the model outputs logits (else probabilities).
        layer_bits: kernel layers pinned to (w, a); None on a side leaves it to the choice.
        skip_layers: layers left in float (fixed cost at 32 x 32 bits).
        per_channel, distribution: as ``quantize_model`` will be called.
        input_bits: the model input's width for BOPs, as in ``uniq_tf.summary``.

    Returns:
        (plan, report): ``plan`` maps every kernel layer (and any activation layer before the
        first one) to (w, a), a = None where the layer owns no activation quantizer; use it
        as ``quantize_model(model, layer_bits=plan, skip_layers=skip_layers)`` and
        ``uniq_tf.summary(model, 8, 8, layer_bits=plan)`` prices it exactly as the report.
        ``report``: an :class:`AllocationReport` (``print(report)`` shows the table).

    Raises:
        ValueError: no budget; a budget below the smallest plan (naming the smallest value);
            unknown or non-kernel layer names in ``layer_bits``/``skip_layers``; bit widths
            out of range; no batch in ``data``; labels missing for ``metric="loss"``.
    """
    start = time.perf_counter()
    model = require_keras2_model(model)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if isinstance(batches, bool) or not isinstance(batches, (int, np.integer)) or batches < 1:
        raise ValueError(f"batches must be a positive integer, got {batches!r}")
    batch_list = _batches(data, batches)
    costs = check_budget(model, max_bops=max_bops, max_weight_bytes=max_weight_bytes,
                         weight_bits=weight_bits, activation_bits=activation_bits,
                         layer_bits=layer_bits, skip_layers=skip_layers,
                         per_channel=per_channel, input_bits=input_bits)
    sensitivity, passes = measure_sensitivity(
        model, batch_list, costs.candidates, batches=batches, metric=metric,
        from_logits=from_logits, skip_layers=skip_layers, per_channel=per_channel,
        distribution=distribution)
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
    report = AllocationReport(model.name, metric, layers, total_bops, total_bits / 8, max_bops,
                              max_weight_bytes, passes, round(time.perf_counter() - start, 2))
    return {**plan, **costs.fixed_plan}, report
