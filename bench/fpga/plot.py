"""The sweep's figure: FINN's LUT against BOPs per model, and against the fit on BOPs and T."""

from __future__ import annotations

from pathlib import Path

from bench.fpga.fits import least_squares, r_squared
from bench.fpga.results import sweep_points


def plot_sweep(data: dict, path: Path) -> None:
    """One panel per model: LUT (total and in MVAUs) against the paper's BOPs, A4 and A8
    marked apart, the per-A and across-A least-squares lines with their R^2; a last panel:
    the measured LUT against the fit on BOPs and T per model (both widths)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    points = sweep_points(data)
    models = list(dict.fromkeys(p["model"] for p in points))
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(5.2 * (len(models) + 1), 4.4))
    markers = {4: "o", 8: "s"}
    for ax, model in zip(axes, models, strict=False):
        members = [p for p in points if p["model"] == model]
        bops = np.array([p["bops"] for p in members]) / 1e6
        for lut, color, label in (("LUT", "tab:blue", "total LUT"),
                                  ("LUT_compute", "tab:orange", "LUT in MVAUs")):
            values = np.array([p[lut] for p in members], float)
            for a_bits in sorted({p["activation_bits"] for p in members}):
                mask = np.array([p["activation_bits"] == a_bits for p in members])
                ax.scatter(bops[mask], values[mask], color=color,
                           marker=markers.get(a_bits, "^"), label=f"{label}, A{a_bits}")
                if mask.sum() >= 2:
                    slope, intercept, r2 = r_squared(bops[mask], values[mask])
                    xs = np.array([bops[mask].min(), bops[mask].max()])
                    ax.plot(xs, slope * xs + intercept, color=color, lw=0.8, ls="--",
                            label=f"A{a_bits} fit, R$^2$ = {r2:.3f}")
            slope, intercept, r2 = r_squared(bops, values)
            xs = np.array([0, bops.max() * 1.05])
            ax.plot(xs, slope * xs + intercept, color=color, lw=1,
                    label=f"A4+A8 fit, R$^2$ = {r2:.3f}")
            for p, x, y in zip(members, bops, values, strict=True):
                ax.annotate(f"W{p['weight_bits']}", (x, y), fontsize=6, xytext=(2, 2),
                            textcoords="offset points")
        ax.set_xlabel("BOPs (uniq_tf.summary, paper's count), millions")
        ax.set_ylabel("FINN LUT estimate")
        ax.set_title(f"{model}: W2..8 x A4/A8, one folding", fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    colors = dict(zip(models, ("tab:blue", "tab:green", "tab:red", "tab:purple"), strict=False))
    for model in models:
        members = [p for p in points if p["model"] == model]
        if len(members) < 3:
            continue
        fit = least_squares({k: [p[k] for p in members] for k in ("bops", "thresholds")},
                            [p["LUT"] for p in members])
        coef = fit["coefficients"]
        predicted = [fit["intercept"] + sum((coef[k] or 0) * p[k] for k in coef)
                     for p in members]
        for a_bits in sorted({p["activation_bits"] for p in members}):
            idx = [i for i, p in enumerate(members) if p["activation_bits"] == a_bits]
            ax.scatter([predicted[i] for i in idx], [members[i]["LUT"] for i in idx],
                       color=colors.get(model), marker=markers.get(a_bits, "^"),
                       label=f"{model}, A{a_bits}")
        ax.plot([], [], color=colors.get(model), lw=0,
                label=f"{model}: LUT on BOPs and T, R$^2$ = {fit['r2']:.3f}")
    top = max((p["LUT"] for p in points), default=1) * 1.05
    ax.plot([0, top], [0, top], color="gray", lw=0.8)
    ax.set_xlabel("fit a BOPs + b T + d (per model, A4 and A8)")
    ax.set_ylabel("FINN LUT estimate (total)")
    ax.set_title("total LUT against BOPs and thresholds T", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
