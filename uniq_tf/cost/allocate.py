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

Step 1 is :mod:`uniq_tf.cost.sensitivity`, steps 2 and 3 :mod:`uniq_tf.cost.program`; this
module checks the arguments, runs them and reports.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence

from uniq_tf._keras import require_keras2_model
from uniq_tf.cost import bops
from uniq_tf.cost.program import CostModel, Pair, cost_model, solve
from uniq_tf.cost.sensitivity import (
    MEASURES,
    METRICS,
    measure_sensitivity,
    output_measures,
    sample_batches,
)
from uniq_tf.integration import plan as planning
from uniq_tf.integration.configs import KernelQuantizeConfig
from uniq_tf.method.settings import (
    ACTIVATION_BITS_RANGE,
    WEIGHT_BITS_RANGE,
    UniqSettings,
    check_activation_bits,
    check_weight_bits,
)
from uniq_tf.util import checks


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
    batch_list = sample_batches(data, batches, model)
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
