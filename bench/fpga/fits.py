"""Least-squares fits of FINN's LUT estimate on BOPs (and the threshold count T), with R^2."""

from __future__ import annotations


def r_squared(x, y) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the least-squares line y = slope x + intercept."""
    fit = least_squares({"x": x}, y)
    return fit["coefficients"]["x"], fit["intercept"], fit["r2"]


def least_squares(columns: dict, y) -> dict:
    """y = sum_k a_k columns[k] + d by least squares. A column constant over the points cannot
    be told from the intercept: it is left out, its coefficient None. Returns
    {"coefficients": {name: a_k or None}, "intercept": d, "r2": 1 - SS_res / SS_tot}."""
    import numpy as np

    y = np.asarray(y, float)
    used = {k: np.asarray(v, float) for k, v in columns.items() if np.ptp(np.asarray(v, float))}
    design = np.column_stack([*used.values(), np.ones_like(y)])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ solution
    total = float(((y - y.mean()) ** 2).sum())
    coefficients = dict.fromkeys(columns)
    coefficients.update({k: float(a) for k, a in zip(used, solution[:-1], strict=True)})
    return {"coefficients": coefficients, "intercept": float(solution[-1]),
            "r2": float(1 - (residual ** 2).sum() / total) if total else float("nan")}


PREDICTORS = {"BOPs": ("bops",), "BOPs, T": ("bops", "thresholds")}
LUT_KINDS = {"total": "LUT", "MVAUs": "LUT_compute"}


def fit_rows(points: list[dict]) -> list[dict]:
    """Least squares of LUT (total, MVAUs) on each predictor (PREDICTORS) per model and
    activation width, per model across widths ("all"), and over all models ("all") when there
    are several; groups of fewer than 3 points are left out."""
    models = list(dict.fromkeys(p["model"] for p in points))
    widths = sorted({p["activation_bits"] for p in points})
    groups = [(m, a) for m in models + (["all"] if len(models) > 1 else [])
              for a in widths + (["all"] if len(widths) > 1 else [])]
    rows = []
    for model, a_bits in groups:
        members = [p for p in points if model in ("all", p["model"])
                   and a_bits in ("all", p["activation_bits"])]
        if len(members) < 3:
            continue
        for lut_name, lut in LUT_KINDS.items():
            for predictor, keys in PREDICTORS.items():
                if any(p.get(k) is None for p in members for k in keys):
                    continue
                fit = least_squares({k: [p[k] for p in members] for k in keys},
                                    [p[lut] for p in members])
                rows.append({"model": model, "activation_bits": a_bits, "n": len(members),
                             "lut": lut_name, "predictor": predictor, **fit})
    return rows
