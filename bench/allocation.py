"""Mixed precision under a budget: ``uniq_tf.allocate_bits`` against the uniform plan of the
same BOPs.

For each model and seed, one float model; for each budget equal to a uniform plan's BOPs
(W2A8, W3A8, W4A4), two runs start from it with the same staged UNIQ fine-tune (the low-bit
suite's "short" schedule with the library's defaults, one learning rate):
the uniform plan, and the plan ``allocate_bits`` chooses within the budget among weight bits
(2, 3, 4, 8) x activation bits (4, 8), its sensitivity measured on the first 4 training
batches of the seed. Data and protocol are the low-bit suite's (``bench/lowbit.py``): seed s
trains on four folds of all 1,797 digits and tests on the fifth at its 9 one-pixel shifts;
runs are deterministic. Reported per budget: mean accuracy of both plans and the paired
difference (allocated - uniform) with its 95 % t interval over the seeds. Also the allocation
time of ResNet-20 (random initialization, CIFAR-sized random inputs: the time does not depend
on the weights).

    .venv/bin/python -m bench.allocation --output_dir=outputs/allocation --docs_dir=docs
    .venv/bin/python -m bench.allocation --quick --output_dir=/tmp/alloc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import uniq_tf
from bench import common, lowbit_data, lowbit_methods
from uniq_tf._keras import keras, tf
from uniq_tf.schedule.gradual import GradualQuantization
from uniq_tf.zoo import models

ROOT = Path(__file__).resolve().parents[1]

MODELS = {"small_cnn": models.small_cnn, "tiny_cnn": lowbit_data.tiny_cnn,
          "narrow_resnet": lowbit_data.narrow_resnet}
BUDGETS = ((2, 8), (3, 8), (4, 4))  # uniform plans whose BOPs are the budgets
WEIGHT_BITS = (2, 3, 4, 8)
ACTIVATION_BITS = (4, 8)
SEEDS = (0, 1, 2)
FLOAT_EPOCHS = 30
RATE = 3e-4
SCHEDULE = lowbit_methods.SCHEDULES["short"]
SENSITIVITY_BATCHES = 4
SECTION_START, SECTION_END = common.section_markers("allocation")


def float_model(name: str, seed: int, float_dir: str, epochs: int):
    """The float model of (``name``, ``seed``), trained once on the seed's folds and saved
    (the low-bit suite's float training)."""
    return lowbit_data.float_model(name, seed, float_dir, epochs, models=MODELS)


def allocate(float_, seed: int, max_bops: float):
    """allocate_bits on the first training batches of ``seed``: (plan, report)."""
    x, y, _, _ = lowbit_data.folds(seed)
    return uniq_tf.allocate_bits(
        float_, lowbit_data.train_dataset(x, y, seed), max_bops=max_bops, weight_bits=WEIGHT_BITS,
        activation_bits=ACTIVATION_BITS, batches=SENSITIVITY_BATCHES)


def fine_tune(float_, seed: int, uniform: tuple[int, int], plan: dict | None) -> dict:
    """The staged UNIQ fine-tune of ``plan`` (or of the uniform pair when None) from
    ``float_``; test accuracy and cross-entropy with every quantizer on, and the BOPs."""
    common.set_seed(seed)
    x, y, xt, yt = lowbit_data.folds(seed)
    train = lowbit_data.train_dataset(x, y, seed)
    model = uniq_tf.quantize_model(float_, *uniform, layer_bits=plan)  # the defaults
    uniq_tf.calibrate_activations(model, train, steps=10, verbose=False)
    stages = len(GradualQuantization("layer").plan(model))
    epochs = SCHEDULE.epochs(stages)
    steps = int(np.ceil(len(x) / 64))
    lowbit_data.compile_model(model, SCHEDULE.optimizer_for(RATE, steps, epochs))
    model.fit(train, epochs=epochs, verbose=0, callbacks=[SCHEDULE.callback(None, "layer")])
    uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
    uniq_tf.set_activation_mode(model, uniq_tf.ActMode.QUANTIZED)
    return {"epochs": epochs, "bops": uniq_tf.summary(model).total_bops,
            **lowbit_data.evaluate(model, lowbit_data.test_dataset(xt, yt))}


def run_model(name: str, seeds, budgets, float_dir: str, float_epochs: int,
              progress=print) -> list[dict]:
    """Every (seed, budget) of one model: the uniform run and the allocated run."""
    runs = []
    for seed in seeds:
        float_, metrics = float_model(name, seed, float_dir, float_epochs)
        progress(f"{name} float seed {seed}: {100 * metrics['accuracy']:.2f} %")
        for w, a in budgets:
            max_bops = uniq_tf.summary(float_, w, a).total_bops
            plan, report = allocate(float_, seed, max_bops)
            for method, layer_bits in (("uniform", None), ("allocated", plan)):
                start = time.perf_counter()
                result = fine_tune(float_, seed, (w, a), layer_bits)
                runs.append({
                    "model": name, "seed": seed, "budget": f"W{w}A{a}", "max_bops": max_bops,
                    "method": method, "float_accuracy": metrics["accuracy"], **result,
                    "plan": {k: list(v) for k, v in plan.items()} if layer_bits else None,
                    "allocation_seconds": report.seconds if layer_bits else None,
                    "measures": report.measures,
                    "seconds": round(time.perf_counter() - start, 1),
                })
                progress(f"{name} seed {seed} W{w}A{a} budget, {method}: "
                         f"{100 * result['accuracy']:.2f} % ({runs[-1]['seconds']:.0f} s)")
                keras.backend.clear_session()
    return runs


def resnet20_allocation_seconds(repeats: int = 1) -> dict:
    """allocate_bits on a random ResNet-20 with 4 batches of 64 random 32x32x3 inputs at the
    W2A8 budget: wall time of each repeat, forward passes."""
    keras.utils.set_random_seed(0)
    model = models.resnet20()
    data = np.random.default_rng(0).random((4 * 64, 32, 32, 3), dtype=np.float32)
    budget = uniq_tf.summary(model, 2, 8).total_bops
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, report = uniq_tf.allocate_bits(model, data, max_bops=budget)
        times.append(round(time.perf_counter() - start, 1))
    return {"seconds": times, "forward_passes": report.forward_passes,
            "layers": len(report.layers)}


# ---------------------------------------------------------------- statistics and outputs


def paired(runs: list[dict]) -> tuple[float, float, int]:
    """(mean of allocated - uniform in points, half-width of its 95 % t interval, seeds)."""
    return common.paired(runs, "allocated", "uniform")


def summary(results: dict) -> list[dict]:
    out = []
    for model in results["models"]:
        for budget in results["budgets"]:
            runs = [r for r in results["runs"] if r["model"] == model and r["budget"] == budget]
            if not runs:
                continue
            row = {"model": model, "budget": budget, "max_bops": runs[0]["max_bops"]}
            for method in ("uniform", "allocated"):
                mine = [r for r in runs if r["method"] == method]
                acc = [100 * r["accuracy"] for r in mine]
                row[method] = {"mean": float(np.mean(acc)),
                               "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                               "bops": float(np.mean([r["bops"] for r in mine])),
                               "cross_entropy": float(np.mean([r["cross_entropy"]
                                                               for r in mine]))}
            row["diff"], row["ci_half"], row["n"] = paired(runs)
            row["plans"] = sorted({_plan_text(r["plan"]) for r in runs
                                   if r["method"] == "allocated"})
            out.append(row)
    return out


def _plan_text(plan: dict) -> str:
    return " ".join(f"W{w}A{'-' if a is None else a}" for w, a in plan.values())


def table(results: dict) -> str:
    body = []
    for e in results["summary"]:
        verdict = ("" if np.isnan(e["ci_half"]) else " ▲" if e["diff"] - e["ci_half"] > 0
                   else " ▼" if e["diff"] + e["ci_half"] < 0 else "")
        body.append([
            e["model"], e["budget"], common.si(e["max_bops"]),
            f"{e['uniform']['mean']:.2f} ± {e['uniform']['std']:.2f}",
            f"{e['allocated']['mean']:.2f} ± {e['allocated']['std']:.2f}",
            f"{e['diff']:+.2f} ± {e['ci_half']:.2f}{verdict}",
            f"{100 * e['allocated']['bops'] / e['max_bops']:.1f} %",
            "<br>".join(e["plans"]),
        ])
    return common.markdown_table(
        ["model", "budget = BOPs of", "BOPs", "uniform (%)", "allocated (%)",
         "allocated - uniform (points, 95 % CI)", "allocated BOPs / budget",
         "allocated plans over the seeds (kernel layers in forward order; W: weight bits, "
         "A: bits of the activations after the layer)"], body)


def plot(results: dict, output_dir: str) -> list[str]:
    """Accuracy against BOPs per model: the uniform front, the allocated front and the
    budget lines; and seed 0's plan at the first budget, per layer."""
    paths = []
    for model in results["models"]:
        rows = [e for e in results["summary"] if e["model"] == model]
        points = [{"method": f"{label} plan", "bops": e[key]["bops"],
                   "accuracy": e[key]["mean"], "std": e[key]["std"], "label": e["budget"]}
                  for e in rows for key, label in (("uniform", "uniform"),
                                                    ("allocated", "allocated"))]
        floats = [100 * r["float_accuracy"] for r in results["runs"]
                  if r["model"] == model and r["method"] == "uniform"]
        path = os.path.join(output_dir, f"allocation_{model}.png")
        # Float (32 x 32 bits) sits 30x to the right; its accuracy goes in the title instead.
        uniq_tf.plot_tradeoff(points, path, title=f"{model} on digits: allocated vs uniform "
                              f"plans, mean ± std over seeds (float {np.mean(floats):.2f} %)",
                              accuracy_label="test accuracy (%)",
                              budget=[e["max_bops"] for e in rows])
        paths.append(path)
        first = next(r for r in results["runs"] if r["model"] == model
                     and r["method"] == "allocated" and r["budget"] == results["budgets"][0])
        report = uniq_tf.summary(
            MODELS[model](), 8, 8, max_bops=first["max_bops"],
            layer_bits={k: tuple(v) for k, v in first["plan"].items()})
        paths.append(uniq_tf.plot_plan(report, os.path.join(output_dir,
                                                            f"allocation_plan_{model}.png")))
    return paths


def section(results: dict, image_dir: str = "img") -> str:
    machine = results["machine"]
    timing = results["resnet20"]
    seconds = ", ".join(f"{s:.0f} s" for s in timing["seconds"])
    w2a8 = {e["model"]: e for e in results["summary"] if e["budget"] == "W2A8"}
    closing = "; ".join(
        f"{m}: allocated {e['allocated']['mean']:.2f} % vs uniform {e['uniform']['mean']:.2f} "
        f"% ({e['diff']:+.2f} ± {e['ci_half']:.2f} points)" for m, e in w2a8.items())
    parts = [
        SECTION_START,
        "## 5. Mixed precision under a budget (`bench/allocation.py`, run by hand)\n",
        f"Generated by `{results['command']}` on {machine['date']} "
        f"({results['seconds'] / 60:.0f} min, one process; {machine['cores']} cores, "
        f"{machine['cpu']}, load average {machine['load_average'][0]:.1f} at the end: this run "
        "and other jobs sharing the machine). Budgets are the BOPs of the uniform "
        "W2A8, W3A8 and W4A4 plans; `uniq_tf.allocate_bits` chooses per-layer bits among "
        f"weights {WEIGHT_BITS} x activations {ACTIVATION_BITS} (sensitivity: "
        f"{_measures(results)}, on {SENSITIVITY_BATCHES} training batches), and both plans get "
        f"the same staged UNIQ fine-tune (low-bit suite protocol: {len(results['seeds'])} "
        "seeds = folds of the digits, 9 shifts per test image; short schedule, the library's "
        f"default noise and polish, learning rate {RATE:g}). Accuracy mean ± std over the "
        "seeds; the difference "
        "is paired by seed with its 95 % t interval (▲ / ▼: the interval excludes 0).\n",
        table(results),
        f"Allocation time of ResNet-20 ({timing['layers']} kernel layers, 4 batches of 64 "
        f"random 32x32x3 inputs, W2A8 budget): {seconds} "
        f"({timing['forward_passes']} batch forward passes, same machine and load).\n",
        f"At the W2A8-equivalent budget: {closing}.\n",
        _targets(results),
    ]
    parts += [f"![allocation, {m}]({image_dir}/allocation_{m}.png)\n" for m in results["models"]]
    parts.append(f"Seed 0's allocated plan at the {results['budgets'][0]} budget, per layer:\n")
    parts += [f"![plan, {m}]({image_dir}/allocation_plan_{m}.png)\n" for m in results["models"]]
    parts.append(SECTION_END)
    return "\n".join(parts) + "\n"


def _measures(results: dict) -> str:
    """The sensitivity measures the allocations used (``AllocationReport.measures``)."""
    found = sorted({f"{m['measure']} ({m['why']})" for r in results["runs"]
                    for m in r.get("measures") or []})
    return "; ".join(found) or "not recorded"


def _targets(results: dict) -> str:
    """The target, allocated at or above uniform, per row of the table."""
    rows = results["summary"]
    met = [e for e in rows if e["diff"] >= 0]
    above = [e for e in rows if e["diff"] - e["ci_half"] > 0]
    below = [e for e in rows if e["diff"] + e["ci_half"] < 0]
    missed = ", ".join(f"{e['model']} at {e['budget']} ({e['diff']:+.2f} ± {e['ci_half']:.2f})"
                       for e in rows if e["diff"] < 0) or "none"
    return (f"Target (allocated at or above uniform): the mean difference is >= 0 in "
            f"{len(met)} of {len(rows)} (model, budget) pairs, with an interval above 0 in "
            f"{len(above)} and below 0 in {len(below)}; mean below 0: {missed}.\n")


def splice(page: str, text: str) -> str:
    """``page`` with this section replaced, or inserted right before ``## Findings``."""
    return common.splice_section(page, "allocation", text)


def write_outputs(results: dict, output_dir: str, docs_dir: str = "") -> None:
    common.write_json(os.path.join(output_dir, "allocation.json"), results)
    common.write_text(os.path.join(output_dir, "allocation.md"), section(results))
    plot(results, output_dir)
    if docs_dir:
        path = os.path.join(docs_dir, "benchmarks.md")
        common.write_text(path, splice(Path(path).read_text(encoding="utf-8"),
                                       section(results)))
        os.makedirs(os.path.join(docs_dir, "img"), exist_ok=True)
        for m in results["models"]:
            for name in (f"allocation_{m}.png", f"allocation_plan_{m}.png"):
                shutil.copyfile(os.path.join(output_dir, name),
                                os.path.join(docs_dir, "img", name))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny_cnn, 2 seeds, W2A8")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "allocation"))
    parser.add_argument("--docs_dir", default="", help="splice the section into "
                        "DOCS_DIR/benchmarks.md before '## Findings'")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="folds 0..N-1 (<= 5)")
    args = parser.parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    warnings.filterwarnings("ignore", message=".*HDF5 file.*")
    started = time.perf_counter()
    names = ["tiny_cnn"] if args.quick else list(MODELS)
    seeds = (0, 1) if args.quick else tuple(range(args.seeds))
    budgets = BUDGETS[:1] if args.quick else BUDGETS
    float_epochs = 12 if args.quick else FLOAT_EPOCHS
    output_dir = os.path.abspath(args.output_dir)
    runs = []
    for name in names:
        # Each model's runs are kept, so a killed run starts again at the next model.
        part = Path(output_dir, "parts", f"{name}_{len(seeds)}seeds_{len(budgets)}budgets.json")
        if not part.exists():
            common.write_json(str(part), run_model(
                name, seeds, budgets, os.path.join(output_dir, "float_models"), float_epochs,
                lambda m: print(m, flush=True)))
        runs += json.loads(part.read_text(encoding="utf-8"))
    results = {
        "models": names, "seeds": list(seeds), "budgets": [f"W{w}A{a}" for w, a in budgets],
        "runs": runs,
        "float_bops": {n: uniq_tf.summary(MODELS[n]()).total_bops for n in names},
        "resnet20": resnet20_allocation_seconds(),
        "command": " ".join(["python -m bench.allocation"] + [
            a for a in (argv if argv is not None else sys.argv[1:])
            if not a.startswith(("--output_dir", "--docs_dir"))]),
    }
    results["summary"] = summary(results)
    # At least the runs' own times: a run that reuses its parts reports what they cost.
    results["seconds"] = round(max(time.perf_counter() - started,
                                   sum(r.get("seconds", 0.0) for r in runs)), 1)
    results["machine"] = common.machine()
    write_outputs(results, output_dir, args.docs_dir)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
