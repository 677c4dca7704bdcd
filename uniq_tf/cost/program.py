"""Steps 2 and 3 of :func:`uniq_tf.allocate_bits`: what each candidate pair costs, and the exact
choice under the budgets (docs/method.md, "Mixed precision under a budget").

A layer's BOPs depend on its weight width and on the width of its input, i.e. on the activation
bits of the layer(s) upstream (merges take the widest); the graph is probed once to find those
sources, so a plan's cost equals what ``uniq_tf.summary(model, layer_bits=plan)`` reports.
Weight memory is the summary's (kernels at w bits, codebooks, everything else at 32 bits). A
mixed-integer program (``scipy.optimize.milp``) picks one pair per layer minimizing
sum_j s_j(c_j) under the budgets; the objective assumes the layers' sensitivities add up (they
are measured one layer at a time), the budgets are exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from uniq_tf.cost import bops
from uniq_tf.method.settings import (
    ACTIVATION_BITS_RANGE,
)

# Activation widths the graph is probed with: the lowest and highest quantize_model accepts.
_LOW, _HIGH = ACTIVATION_BITS_RANGE
_PROBE_WEIGHT_BITS = 8
OBJECTIVE_SCALE = 1e6
MAX_CUTS = 50
Pair = tuple[int, int | None]


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


