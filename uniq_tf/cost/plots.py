"""Accuracy versus BOPs: the comparison the UNIQ paper proposes (docs/bops.md).

A method is better where it reaches higher accuracy for no more BOPs; the Pareto front (the
points no other point beats on both axes) is what a user picks from.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from numbers import Real

from uniq_tf.cost import bops
from uniq_tf.util import atomic

FULL_PRECISION = (32, 32)

# ImageNet top-1 (%) at 224x224, Baskin et al. 2021 (the 4,4 and 2,4 rows from the preprint);
# (weight bits, activation bits) -> accuracy. FULL_PRECISION is the float baseline.
PUBLISHED_ACCURACY: dict[str, dict[tuple[int, int], float]] = {
    "ResNet-18": {FULL_PRECISION: 69.76, (4, 8): 67.02, (5, 8): 68.00, (4, 4): 66.02},
    "MobileNet v1": {
        FULL_PRECISION: 68.20, (4, 8): 66.00, (5, 8): 67.50, (8, 8): 68.25, (4, 4): 64.40,
        (2, 4): 51.01,
    },
}
PUBLISHED_METHOD = "UNIQ paper"


def _published_model(name: str):
    from uniq_tf.zoo import models  # builders are only needed for the published overlay

    builder = {"ResNet-18": models.resnet18, "MobileNet v1": models.mobilenet_v1}[name]
    return builder(input_shape=(224, 224, 3), num_classes=1000)


@functools.lru_cache(maxsize=1)
def published_points() -> tuple[dict, ...]:
    """The paper's points as plot_tradeoff points. BOPs are ours (``bops.summary``) for every
    conv and dense layer quantized at the stated bits, input 8 bits; float counts 32 x 32."""
    points = []
    for model_name, results in PUBLISHED_ACCURACY.items():
        model = _published_model(model_name)
        for (w_bits, a_bits), accuracy in results.items():
            if (w_bits, a_bits) == FULL_PRECISION:
                report, label = bops.summary(model), "FP"
            else:
                report, label = bops.summary(model, w_bits, a_bits), f"{w_bits},{a_bits}"
            points.append({
                "method": f"{PUBLISHED_METHOD}: {model_name}", "bops": report.total_bops,
                "accuracy": accuracy, "label": label,
            })
    return tuple(points)


_NUMBER_RULES = {
    "bops": (lambda v: v > 0, "> 0"),
    "accuracy": (lambda v: True, "(any finite value)"),
    "std": (lambda v: v >= 0, ">= 0"),
}


def _check_points(points: Sequence[Mapping]) -> list[dict]:
    if isinstance(points, (Mapping, str)) or not isinstance(points, Sequence):
        raise ValueError(f"points must be a list of dicts, got {type(points).__name__}")
    checked = []
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ValueError(f"points[{i}] must be a dict, got {point!r}")
        missing = {"method", "bops", "accuracy"} - set(point)
        if missing:
            raise ValueError(f"points[{i}] lacks {sorted(missing)}; got keys {sorted(point)}")
        if not isinstance(point["method"], str) or not point["method"]:
            raise ValueError(f"points[{i}]['method'] must be a non-empty string, "
                             f"got {point['method']!r}")
        for key, (rule, allowed) in _NUMBER_RULES.items():
            if key not in point:
                continue
            value = point[key]
            number = isinstance(value, Real) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and rule(value)):
                raise ValueError(
                    f"points[{i}][{key!r}] must be a finite number {allowed}, got {value!r}"
                )
        checked.append(dict(point))
    return checked


def pareto_front(points: Sequence[Mapping]) -> list[int]:
    """Indices of the points that no other point dominates (BOPs <= and accuracy >=, one of
    them strictly), in increasing BOPs."""
    points = _check_points(points)
    front = [
        i for i, p in enumerate(points)
        if not any(
            q["bops"] <= p["bops"] and q["accuracy"] >= p["accuracy"]
            and (q["bops"] < p["bops"] or q["accuracy"] > p["accuracy"])
            for q in points
        )
    ]
    return sorted(front, key=lambda i: (points[i]["bops"], -points[i]["accuracy"]))


def tradeoff_figure(
    points: Sequence[Mapping],
    published: bool = False,
    title: str = "Accuracy vs. BOPs",
    accuracy_label: str = "top-1 accuracy (%)",
    budget: float | Sequence[float] | None = None,
):
    """The matplotlib Figure :func:`plot_tradeoff` saves (same arguments, no path)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    everything = _check_points(points) + (list(published_points()) if published else [])
    if not everything:
        raise ValueError("Nothing to plot: points is empty and published=False")
    figure = Figure(figsize=(8, 5), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    series: dict[str, list[dict]] = {}
    for point in everything:
        series.setdefault(point["method"], []).append(point)
    for method, members in series.items():
        members = sorted(members, key=lambda p: p["bops"])
        is_published = method.startswith(PUBLISHED_METHOD)
        has_std = any("std" in p for p in members)
        axes.errorbar(
            [p["bops"] for p in members], [p["accuracy"] for p in members],
            yerr=[p.get("std", 0.0) for p in members] if has_std else None,
            fmt="s--" if is_published else "o-", markersize=6, linewidth=1, capsize=3,
            markerfacecolor="none" if is_published else None, label=method, alpha=0.9,
        )
        for p in members:
            if p.get("label"):
                axes.annotate(str(p["label"]), (p["bops"], p["accuracy"]),
                              textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = [everything[i] for i in pareto_front(everything)]
    xs = [p["bops"] for p in front]
    ys = [p["accuracy"] for p in front]
    axes.step(xs, ys, where="post", color="black", linewidth=1.5, alpha=0.6,
              label="Pareto front")
    axes.scatter(xs, ys, s=160, facecolors="none", edgecolors="black", linewidths=1.2,
                 zorder=3, label="_front points")
    for i, value in enumerate(_budgets(budget)):
        axes.axvline(value, color="grey", linestyle=":", linewidth=1.2,
                     label="BOPs budget" if i == 0 else "_budget")
    axes.set_xscale("log")
    axes.set_xlabel("BOPs (bit operations, Baskin et al. 2021; log scale)")
    axes.set_ylabel(accuracy_label)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return figure


def _budgets(budget) -> list[float]:
    values = [] if budget is None else [budget] if isinstance(budget, Real) else list(budget)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Real) or not (
                math.isfinite(value) and value > 0):
            raise ValueError(f"budget must be a finite number of BOPs > 0 (or a list of them), "
                             f"got {value!r}")
    return [float(v) for v in values]


def plot_tradeoff(
    points: Sequence[Mapping],
    path: str | os.PathLike,
    published: bool = False,
    title: str = "Accuracy vs. BOPs",
    accuracy_label: str = "top-1 accuracy (%)",
    budget: float | Sequence[float] | None = None,
) -> str:
    """Writes a PNG of accuracy against BOPs (log scale): one series per ``method``, optional
    error bars (``std``) and point labels (``label``), and the Pareto front of all plotted
    points drawn as a staircase with its points ringed.

    Args:
        points: dicts {"method": str, "bops": > 0, "accuracy": float, "std"?: >= 0,
            "label"?: str}; BOPs as ``uniq_tf.summary(...).total_bops`` gives them.
        path: the PNG to write, atomically (parent folders are created; a failed call leaves
            an existing file untouched).
        published: overlay the UNIQ paper's ImageNet points (ResNet-18, MobileNet v1 at
            224x224, see :func:`published_points`); they join the Pareto front.
        budget: BOPs budget(s), e.g. given to ``uniq_tf.allocate_bits``, drawn as dotted
            vertical lines.
    Returns:
        ``path`` as a string.

    Raises:
        ValueError: ``path`` does not end in .png, a point is malformed, or there is
            nothing to plot.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"plot_tradeoff writes PNG files; path must end in .png, got {path!r}")
    figure = tradeoff_figure(points, published, title, accuracy_label, budget)
    _save_atomic(figure, path)
    return path


def plan_figure(report: bops.BopsReport):
    """The matplotlib Figure :func:`plot_plan` saves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [row for row in report.layers if row["macs"]]
    if not rows:
        raise ValueError(f"Report of {report.model!r} has no kernel layer to plot")
    figure = Figure(figsize=(max(6, 0.5 * len(rows) + 2), 4), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = axes.bar(range(len(rows)), [row["bops"] for row in rows], color="tab:blue")
    axes.bar_label(bars, [f"W{row['weight_bits']}A{row['activation_bits']}" for row in rows],
                   fontsize=7)
    axes.set_xticks(range(len(rows)), [row["name"] for row in rows], rotation=60,
                    ha="right", fontsize=7)
    axes.set_ylabel("BOPs (A bits: the input's width)")
    budget = ("" if report.max_bops is None else
              f" of a budget of {report.max_bops:.4g} "
              f"({100 * report.total_bops / report.max_bops:.1f} %)")
    axes.set_title(f"{report.model}: {report.total_bops:.4g} BOPs{budget}", fontsize=9)
    return figure


def plot_plan(report: bops.BopsReport, path: str | os.PathLike) -> str:
    """Writes a PNG of a plan: one bar per kernel layer (forward order) with its BOPs,
    labelled with its weight bits and input activation bits, and the total against the
    report's ``max_bops`` if it has one.

    Args:
        report: ``uniq_tf.summary(model, ..., layer_bits=plan, max_bops=...)`` or the
            summary of a quantized model.
        path: the PNG to write, atomically.
    Returns:
        ``path`` as a string.

    Raises:
        ValueError: ``path`` does not end in .png, or the report has no kernel layer.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"plot_plan writes PNG files; path must end in .png, got {path!r}")
    _save_atomic(plan_figure(report), path)
    return path


def _save_atomic(figure, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic.atomic_path(path) as temp:
        figure.savefig(temp, format="png")
