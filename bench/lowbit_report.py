"""The low-bit suite's report (bench/lowbit.py): summary statistics, the targets, the tables,
the noise table, the plots, the suite's section of docs/benchmarks.md and the files a run writes.

For each method, the paired difference to UNIQ's default over the seeds, with a 95 % t interval
(n - 1 degrees of freedom; :data:`paired`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import uniq_tf
from bench import common
from bench.lowbit_methods import FINE_TUNED, METHODS, REFERENCE_METHOD

paired = common.paired  # the suite's paired difference (bench.common)


def _groups(results: dict):
    out: dict = {}
    for r in results["runs"]:
        out.setdefault((r["model"], r["schedule"], r["weight_bits"], r["activation_bits"]),
                       []).append(r)
    return out


def summary(results: dict) -> list[dict]:
    """Per (model, schedule, method, bits): mean accuracy and cross-entropy, and the paired
    difference to UNIQ's default with its 95 % interval."""
    out = []
    for (model, schedule, wb, ab), runs in _groups(results).items():
        for method in results["methods"]:
            mine = [r for r in runs if r["method"] == method]
            if not mine:
                continue
            acc = [100 * r["accuracy"] for r in mine]
            diff, half, n = paired(runs, method, results.get("reference", REFERENCE_METHOD))
            out.append({
                "model": model, "schedule": schedule, "method": method, "weight_bits": wb,
                "activation_bits": ab, "mean": float(np.mean(acc)),
                "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                "cross_entropy": float(np.mean([r["cross_entropy"] for r in mine])),
                "diff_to_uniq": diff, "ci_half": half, "n": n,
            })
    return out


TARGET_BITS = ((2, 8), (2, 4), (3, 8), (4, 8))
TARGET_SCHEDULE = "short"  # the project's default fine-tune
RESOLVED_BITS, RESOLUTION = (2, 8), 2.0  # intervals at 2 bits narrow enough to compare


def targets(results: dict) -> list[dict]:
    """The suite's target per model and bit width, on the default schedule: no fine-tuned peer's
    paired 95 % interval lies entirely above UNIQ's defaults (no ▲; LSQ is a peer)."""
    reference = results.get("reference", REFERENCE_METHOD)
    out = []
    for model in results["models"]:
        for w, a in TARGET_BITS:
            peers_ = [e for e in results["summary"]
                      if (e["model"], e["schedule"], e["weight_bits"], e["activation_bits"])
                      == (model, TARGET_SCHEDULE, w, a) and e["method"] in FINE_TUNED
                      and e["method"] != reference and not e["method"].startswith("uniq")]
            if not peers_:
                continue
            worst = max(peers_, key=lambda e: e["diff_to_uniq"])
            met = all(e["diff_to_uniq"] <= 0 or e["diff_to_uniq"] - e["ci_half"] <= 0
                      for e in peers_)
            out.append({
                "model": model, "met": met,
                "target": f"W{w}A{a}: no peer's paired 95 % interval above UNIQ (no ▲)",
                "measured": f"best peer {METHODS[worst['method']]} minus UNIQ: "
                            f"{worst['diff_to_uniq']:+.2f} ± {worst['ci_half']:.2f} points",
            })
            if (w, a) == RESOLVED_BITS:
                widest = max(peers_, key=lambda e: e["ci_half"])
                out.append({
                    "model": model, "met": widest["ci_half"] <= RESOLUTION,
                    "target": f"W{w}A{a}: every paired 95 % interval (UNIQ against a peer) at "
                              f"most ± {RESOLUTION:g} points",
                    "measured": f"widest ± {widest['ci_half']:.2f} "
                                f"({METHODS[widest['method']]}, {widest['n']} seeds)",
                })
    return out


def _verdict(diff: float, half: float) -> str:
    if np.isnan(half):
        return ""
    if diff - half > 0:
        return " ▲"
    if diff + half < 0:
        return " ▼"
    return ""


def tables(results: dict) -> str:
    """Per model and schedule: mean accuracy (%), cross-entropy and paired difference to
    UNIQ's default with its 95 % interval."""
    rows = {(e["model"], e["schedule"], e["method"], e["weight_bits"], e["activation_bits"]): e
            for e in results["summary"]}
    reference = results.get("reference", REFERENCE_METHOD)
    text = []
    for model in results["models"]:
        floats = [100 * f["accuracy"] for f in results["float"] if f["model"] == model]
        for schedule in results["schedules"]:
            bits = [(w, a) for w, a in results["bits"]
                    if any((model, schedule, m, w, a) in rows for m in results["methods"])]
            header = ["method", "lr"] + [f"W{w}A{a}" for w, a in bits]
            body = []
            for method in results["methods"]:
                cells = []
                for w, a in bits:
                    e = rows.get((model, schedule, method, w, a))
                    if e is None:
                        cells.append("-")
                        continue
                    cell = f"{e['mean']:.2f} ({e['cross_entropy']:.3f})"
                    if method != reference:
                        cell += (f"<br>{e['diff_to_uniq']:+.2f} ± {e['ci_half']:.2f}"
                                 f"{_verdict(e['diff_to_uniq'], e['ci_half'])}")
                    cells.append(cell)
                if all(cell == "-" for cell in cells):
                    continue  # not run on this schedule
                rate = results["rates"].get(f"{model}/{schedule}/{method}")
                body.append([METHODS[method], "-" if rate is None else f"{rate:g}"] + cells)
            epochs = results["epochs"].get(f"{model}/{schedule}", "?")
            text.append(
                f"**{model}, {schedule} schedule** ({epochs} fine-tuning epochs; one test "
                f"image is {resolution(results):.3f} points of a seed's accuracy; float "
                f"{np.mean(floats):.2f} %): mean test accuracy % (cross-entropy); below it, "
                f"the paired difference to *{METHODS[reference]}* in points with its "
                "95 % interval over the seeds (▲ / ▼: the interval excludes 0, the method is "
                "above / below UNIQ).\n\n" + common.markdown_table(header, body))
    return "\n".join(text)


def plot(results: dict, output_dir: str) -> list[str]:
    """Accuracy against BOPs with error bars (standard deviation over seeds), per model and
    schedule, fine-tuned methods and float."""
    paths = []
    for model in results["models"]:
        for schedule in results["schedules"]:
            points = [
                {"method": METHODS[e["method"]], "bops": results["bops"][model][
                    f"W{e['weight_bits']}A{e['activation_bits']}"],
                 "accuracy": e["mean"], "std": e["std"]}
                for e in results["summary"]
                if e["model"] == model and e["schedule"] == schedule
                and e["method"] in FINE_TUNED]
            floats = [100 * f["accuracy"] for f in results["float"] if f["model"] == model]
            points.append({"method": "float", "bops": results["bops"][model]["float"],
                           "accuracy": float(np.mean(floats)),
                           "std": float(np.std(floats, ddof=1)) if len(floats) > 1 else 0.0})
            path = os.path.join(output_dir, f"lowbit_{model}_{schedule}.png")
            uniq_tf.plot_tradeoff(points, path, title=f"{model} ({schedule} schedule), digits "
                                  "5-fold, mean ± std")
            paths.append(path)
    return paths


def seed_counts_text(results: dict) -> str:
    """How many seeds each schedule ran, in words from the runs (with the wider cells)."""
    counts: dict = {}
    for r in results["runs"]:
        key = (r["schedule"], r["weight_bits"], r["activation_bits"], r["method"], r["model"])
        counts.setdefault(key, set()).add(r["seed"])
    parts = []
    for schedule in results["schedules"]:
        sizes = {k[1:4]: len(v) for k, v in counts.items() if k[0] == schedule}
        if not sizes:
            continue
        usual = min(sizes.values())
        wider = []
        for count in sorted({n for n in sizes.values() if n > usual}, reverse=True):
            cells = sorted({f"W{w}A{a}" for (w, a, _), n in sizes.items() if n == count})
            methods = [m for m in results["methods"]
                       if any(n == count for (_, _, mm), n in sizes.items() if mm == m)]
            wider.append(f"{count} at {', '.join(cells)} for {', '.join(methods)}")
        text = f"{schedule} schedule: {usual} seeds"
        if wider:
            text += f" ({'; '.join(wider)})"
        parts.append(text)
    return "; ".join(parts)


def resolution(results: dict) -> float:
    """Points per test image of one seed (the smallest step an accuracy can take)."""
    sizes = results["test_images"]
    return 100.0 / min(sizes.values())


def noise_table(rows: list[dict]) -> str:
    body = [[r["bits"], r["noise"], f"{r['mse']:.3f}", f"{r['hard_mse']:.3f}",
             f"{r['mse'] / r['hard_mse']:.2f}", f"{r['std']:.3f}", f"{r['hard_std']:.3f}",
             f"{100 * r['beyond_outer']:.1f} %"] for r in rows]
    return ("Noise models on standard normal weights (10^6 per width, `noise_errors()` in "
            "bench/lowbit.py): the noisy tensor's mean squared error to the float weights and "
            "its standard deviation, beside the hard quantizer's, and the share of noisy "
            "weights beyond the outer codebook level.\n\n"
            + common.markdown_table(["bits", "noise", "MSE (σ²)", "hard MSE", "ratio",
                                     "std (σ)", "hard std", "beyond outer level"], body))


SECTION_START, SECTION_END = common.section_markers("lowbit")


def section(results: dict, image_dir: str = "img") -> str:
    """The suite's part of docs/benchmarks.md, between markers that :func:`splice` replaces."""
    machine = results["machine"]
    floats = {m: [100 * f["accuracy"] for f in results["float"] if f["model"] == m]
              for m in results["models"]}
    ptq = {e["model"]: e["mean"] for e in results["summary"]
           if e["method"] == "ptq_kquantile" and (e["weight_bits"], e["activation_bits"]) == (2, 8)}
    protocol = [[m, f"{np.mean(v):.2f}", f"{np.mean(v) - ptq[m]:.1f}" if m in ptq else "-"]
                for m, v in floats.items()]
    parts = [
        SECTION_START,
        "## 4. Low-bit suite: paired comparisons at 2-4 bits (`bench/lowbit.py`)\n",
        f"Generated by `{results.get('command', 'bench/lowbit.py')}` on {machine['date']} "
        f"({results.get('seconds', 0) / 60:.0f} min"
        # How the run was made (bench.lowbit --note: a stopped and resumed run's invocations).
        + (f", {results['note']}" if results.get("note") else "")
        + f"; {machine['cores']} cores, "
        f"{machine['cpu']}; TensorFlow {machine['tensorflow']}, TFMOT {machine['tfmot']}). "
        f"Seed s trains on four folds of a stratified 5-fold split of all 1,797 digits and "
        "tests on fold s % 5, from its own float model and data order; "
        f"{seed_counts_text(results)}. Each test image is seen at its 9 one-pixel shifts: one "
        f"image is {resolution(results):.3f} points of a seed's accuracy. Every method of a "
        "seed starts "
        "from the same float model and sees the same data order; runs are deterministic "
        "(op determinism, seeded ops: the same command gives the same numbers). Each "
        "fine-tuned method uses the best learning rate of the same three-value sweep per "
        "schedule (W2A8, a validation fifth of seed 0's training folds).\n",
        common.markdown_table(["model", "float accuracy (%)",
                               "points lost by 2-bit post-training k-quantile"], protocol),
        noise_table(results["noise_errors"]),
        tables(results),
        "Accuracy against BOPs, mean ± one standard deviation over the seeds (fine-tuned "
        "methods and float):\n",
    ]
    parts += [f"![low-bit suite, {m}, {s}]({image_dir}/lowbit_{m}_{s}.png)\n"
              for m in results["models"] for s in results["schedules"]]
    parts.append(SECTION_END)
    return "\n".join(parts) + "\n"


def splice(page: str, text: str) -> str:
    """``page`` with the suite's section replaced (or inserted before the findings)."""
    return common.splice_section(page, "lowbit", text)


def write_docs(results: dict, output_dir: str, docs_dir: str) -> str:
    """Splices the section into ``docs_dir``/benchmarks.md and copies the plots to img/."""
    import shutil

    path = os.path.join(docs_dir, "benchmarks.md")
    page = Path(path).read_text(encoding="utf-8") if os.path.exists(path) else "# Benchmarks\n"
    common.write_text(path, splice(page, section(results)))
    os.makedirs(os.path.join(docs_dir, "img"), exist_ok=True)
    for m in results["models"]:
        for s in results["schedules"]:
            name = f"lowbit_{m}_{s}.png"
            shutil.copyfile(os.path.join(output_dir, name), os.path.join(docs_dir, "img", name))
    return path


def write_outputs(results: dict, output_dir: str, docs_dir: str = "") -> None:
    """lowbit.json, lowbit.md and the plots in ``output_dir``; the section in ``docs_dir``."""
    common.write_json(os.path.join(output_dir, "lowbit.json"), results)
    common.write_text(os.path.join(output_dir, "lowbit.md"), section(results))
    plot(results, output_dir)
    if docs_dir:
        print(f"lowbit: wrote {write_docs(results, output_dir, docs_dir)}")
    print(f"lowbit: {len(results['runs'])} runs; tables in "
          f"{os.path.join(output_dir, 'lowbit.md')}")
