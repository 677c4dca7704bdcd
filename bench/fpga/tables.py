"""The markdown tables of section 6 of docs/benchmarks.md: the exported variants, their ratios
to the ``default`` bundle, LUT by FINN node kind, FINN's mapping checks, UNIQ against uniform,
the sweep's points and the fits."""

from __future__ import annotations

import json
from pathlib import Path

from bench.fpga.estimate import by_kind
from bench.fpga.results import read_bundle_json, runs_of, sweep_points, with_estimates
from bench.fpga.settings import PYNQ_Z1


def _count(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fixed_layers(output_dir: Path | None, rows: list[dict]) -> set[str]:
    """Names of the descriptor's fixed layers (ResNet-20's option-A shortcuts)."""
    fixed = set()
    for row in rows:
        desc = read_bundle_json(output_dir, row["bundle"], "descriptor.json") or {"layers": []}
        fixed |= {r["name"] for r in desc["layers"] if r.get("fixed_weights")}
    return fixed


def _widths(grid_bits: dict[str, int], fixed: set[str]) -> str:
    """B of the UNIQ layers ("10 (all 20)" or "5/4/..."), and of the fixed layers."""
    uniq = [b for name, b in grid_bits.items() if name not in fixed]
    text = (f"{uniq[0]} (all {len(uniq)})" if len(set(uniq)) == 1 and len(uniq) > 4
            else "/".join(map(str, uniq)))
    fixed_bits = sorted({grid_bits[name] for name in fixed if name in grid_bits})
    return text + (f"; fixed {'/'.join(map(str, fixed_bits))}" if fixed_bits else "")


def _fits_board(est: dict) -> str:
    return "yes" if all(est.get(k, 0) <= cap for k, cap in PYNQ_Z1.items()) else "no"


def variants_table(data: dict, output_dir: Path | None = None) -> str:
    """Every exported bundle: its widths, accuracies, parity and FINN's estimate."""
    finn = data["finn"]
    runs = runs_of(data["export"])
    lines = ["| model | W | variant | B per layer | Keras acc. | ONNX acc. | max abs diff | "
             "top-1 agreement | target fps | LUT | LUT in MVAUs | BRAM_18K | FINN fps | "
             "within Pynq-Z1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for name in dict.fromkeys(r["model"] for r in run["rows"]):
            rows = [r for r in run["rows"] if r["model"] == name]
            fixed = _fixed_layers(output_dir, rows)
            for row in rows:
                est = finn.get(row["bundle"], {})
                cells = [est.get(k) for k in ("LUT", "LUT_compute", "BRAM_18K",
                                              "estimated_fps")]
                agreement = row.get("top1_agreement")
                lines.append(
                    f"| {name} | {row['weight_bits']} | {row['variant']} | "
                    f"{_widths(row['grid_bits'], fixed)} | "
                    f"{100 * row['keras_accuracy']:.2f} % | {100 * row['onnx_accuracy']:.2f} % | "
                    f"{row['max_abs_diff']:.3g} | "
                    + ("-" if agreement is None else f"{100 * agreement:.2f} %")
                    + f" | {row['target_fps']:,.0f} | "
                    + " | ".join(_count(v) for v in cells)
                    + f" | {_fits_board(est) if 'LUT' in est else '-'} |")
    failed = [r for run in runs for r in run.get("failed", [])]
    if failed:
        lines += ["", "Not exported: " + "; ".join(
            f"{r['model']} W{r['weight_bits']} `{r['variant']}` ({r['error']})"
            for r in failed) + "."]
    return "\n".join(lines)


def ratio_table(data: dict, output_dir: Path | None = None) -> str:
    """Each variant against the `default` bundle of its model, W and fps."""
    finn = data["finn"]
    rows = [r for run in runs_of(data["export"]) for r in run["rows"]]
    by_key = {(r["model"], r["weight_bits"], r["variant"], r["target_fps"]): finn.get(r["bundle"],
                                                                                      {})
              for r in rows}
    fps_list = sorted({r["target_fps"] for r in rows})
    lines = ["| model | W | variant | largest B | ONNX - Keras acc. | "
             + " | ".join(f"LUT, LUT in MVAUs, BRAM_18K at {f:,.0f} fps" for f in fps_list)
             + " |", "|---|---|---|---|---|" + "---|" * len(fps_list)]
    seen = set()
    for row in rows:
        key = (row["model"], row["weight_bits"], row["variant"])
        if key in seen:
            continue
        seen.add(key)
        fixed = _fixed_layers(output_dir, [row])
        cells = []
        for f in fps_list:
            est = by_key.get((*key, f), {})
            ref = by_key.get((row["model"], row["weight_bits"], "default", f), {})
            cells.append("-" if "LUT" not in est or "LUT" not in ref else ", ".join(
                f"{est[k] / ref[k]:.2f}x" for k in ("LUT", "LUT_compute", "BRAM_18K")))
        largest = max(b for name, b in row["grid_bits"].items() if name not in fixed)
        lines.append(f"| {row['model']} | {row['weight_bits']} | {row['variant']} | {largest} | "
                     f"{100 * (row['onnx_accuracy'] - row['keras_accuracy']):+.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kinds(est: dict, output_dir: Path | None, bundle: str) -> dict[str, float]:
    """LUT by FINN node kind: from estimate.json, else from the build's summary."""
    if "LUT_by_kind" in est:
        return est["LUT_by_kind"]
    summary = (None if output_dir is None else output_dir / "finn_builds" / Path(bundle).name
               / "uniq_tf_estimate_summary.json")
    if summary is None or not summary.exists():
        return {}
    return by_kind(json.loads(summary.read_text())["per_layer"], "LUT")


def kinds_table(data: dict, output_dir: Path | None = None) -> str:
    """FINN's LUT by node kind of each model's `default` bundles, and the range of the LUT
    outside the MVAUs over all its variants."""
    finn = data["finn"]
    rows = [r for run in runs_of(data["export"]) for r in run["rows"]]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["weight_bits"], row["target_fps"]), []).append(row)
    table_rows, kinds_seen = [], {}
    for key, members in groups.items():
        default = next((r for r in members if r["variant"] == "default"), None)
        est = finn.get(default["bundle"], {}) if default else {}
        if "LUT" not in est:
            continue
        kinds = _kinds(est, output_dir, default["bundle"])
        for kind, lut in kinds.items():
            kinds_seen[kind] = kinds_seen.get(kind, 0) + lut
        rest = [finn[r["bundle"]]["LUT"] - finn[r["bundle"]]["LUT_compute"]
                for r in members if "LUT" in finn.get(r["bundle"], {})]
        table_rows.append((key, kinds, min(rest), max(rest), len(rest)))
    if not table_rows:
        return ""
    order = sorted(kinds_seen, key=lambda k: -kinds_seen[k])
    lines = ["| model | W | target fps | " + " | ".join(order)
             + " | LUT outside MVAUs, all variants |",
             "|---|---|---|" + "---|" * (len(order) + 1)]
    for (model, bits, fps), kinds, low, high, count in table_rows:
        lines.append(f"| {model} | {bits} | {fps:,.0f} | "
                     + " | ".join(_count(kinds.get(k)) for k in order)
                     + (f" | {low:,.0f} in all {count} |" if low == high else
                        f" | {low:,.0f} to {high:,.0f} ({count} bundles) |"))
    return "\n".join(lines)


def mapping_table(data: dict, output_dir: Path | None = None) -> str:
    """Per model and part (variants, sweep): bundles, those FINN built, whether all compute
    layers became MVAU/VVAU nodes and FINN's folding matched the descriptor's."""
    finn = data["finn"]
    lines = ["| model | part | bundles | estimated | compute layers per bundle | all compute "
             "layers MVAU/VVAU | folding mismatches |", "|---|---|---|---|---|---|---|"]
    for part, content in (("variants", data["export"]), ("sweep", data["sweep"])):
        rows = [r for run in runs_of(content) for r in run["rows"]]
        for name in dict.fromkeys(r["model"] for r in rows):
            members = [r for r in rows if r["model"] == name]
            done = [e for _, e in with_estimates(members, finn)]
            desc = read_bundle_json(output_dir, members[0]["bundle"], "descriptor.json")
            layers = "-" if desc is None else str(sum(1 for r in desc["layers"] if r["finn"]))
            mapped = ("-" if not done else "yes" if all(e.get("all_compute_layers_mapped")
                                                        for e in done) else "no")
            wrong = sum(len(e.get("folding_mismatches") or []) for e in done)
            lines.append(f"| {name} | {part} | {len(members)} | {len(done)} | {layers} | "
                         f"{mapped} | {wrong if done else '-'} |")
    return "\n".join(lines)


def uniform_table(data: dict) -> str:
    """UNIQ on the b-bit grid (`grid_b`) against the uniform b-bit model, per model, W, fps."""
    finn = data["finn"]
    rows = [r for run in runs_of(data["export"]) for r in run["rows"]]
    index = {(r["model"], r["weight_bits"], r["variant"], r["target_fps"]): r for r in rows}
    lines = ["| model | W | target fps | LUT grid_b - uniform | BRAM_18K grid_b - uniform | "
             "ONNX acc. grid_b | ONNX acc. uniform |", "|---|---|---|---|---|---|---|"]
    count = 0
    for (model, bits, variant, fps), row in index.items():
        other = index.get((model, bits, "uniform", fps))
        if variant != "grid_b" or other is None:
            continue
        a, b = finn.get(row["bundle"], {}), finn.get(other["bundle"], {})
        if "LUT" not in a or "LUT" not in b:
            continue
        count += 1
        lines.append(f"| {model} | {bits} | {fps:,.0f} | {a['LUT'] - b['LUT']:+,.0f} | "
                     f"{a['BRAM_18K'] - b['BRAM_18K']:+,.0f} | "
                     f"{100 * row['onnx_accuracy']:.2f} % | {100 * other['onnx_accuracy']:.2f} % |")
    return "\n".join(lines) if count else ""


def sweep_table(data: dict) -> str:
    """The sweep's points: BOPs, thresholds and FINN's estimate."""
    lines = ["| model | W | A | BOPs (paper) | MACs x W x A | T | T in FINN | LUT | LUT in MVAUs "
             "| LUT in Thresholding | BRAM_18K | FINN fps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(sweep_points(data),
                    key=lambda p: (p["model"], p["activation_bits"], p["weight_bits"])):
        lines.append(
            f"| {p['model']} | {p['weight_bits']} | {p['activation_bits']} | "
            f"{p['bops'] / 1e6:,.2f} M | {p['bops_simple'] / 1e6:,.2f} M | "
            f"{_count(p.get('thresholds'))} | {_count(p['thresholds_finn'])} | "
            f"{p['LUT']:,.0f} | {p['LUT_compute']:,.0f} | {_count(p['LUT_thresholding'])} | "
            f"{p['BRAM_18K']:,.0f} | {_count(p['estimated_fps'])} |")
    return "\n".join(lines)


def slopes(row: dict) -> str:
    a = row["coefficients"].get("bops")
    text = "-" if a is None else f"a = {a * 1e6:,.1f} LUT per M BOPs"
    if "thresholds" in row["coefficients"]:
        b = row["coefficients"]["thresholds"]
        if b is None:
            text += "; b: - (T the same for all points)"
        else:
            text += f"; b = {b:.3g} LUT per threshold"
            if a:
                text += f" (c = b / a = {b / a:,.0f} BOPs per threshold)"
    return text


def fit_table(rows: list[dict]) -> str:
    """The fits as a markdown table."""
    lines = ["| model | A | n points | LUT | predictor | slope(s) | intercept (LUT) | R^2 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['activation_bits']} | {row['n']} | {row['lut']} | "
                     f"{row['predictor']} | {slopes(row)} | {row['intercept']:,.0f} | "
                     f"{row['r2']:.3f} |")
    return "\n".join(lines)
