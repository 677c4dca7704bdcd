"""The low-bit suite of the accuracy benchmark: a protocol that can tell the methods apart.

bench/accuracy.py's digits split tests on 450 images (0.22 points each) with models that are
near 99 % at 2 bits. This suite is built to resolve differences between methods at 2-4 bits:

- **Folds and repeats as seeds.** Seed s trains on four folds of a stratified 5-fold split of
  all 1,797 digits and tests on fold s % 5, from its own float model and data order, so every
  five consecutive seeds test every digit exactly once. :data:`SCHEDULE_SEEDS` seeds per
  schedule, :data:`SEED_COUNTS` at W2A8 for UNIQ and its fine-tuned peers
  (:data:`WIDE_METHODS`), where 2-bit differences need the tighter interval, and
  :data:`STUDY_SEED_COUNTS` for the freezing study. A run with more seeds keeps the runs an
  earlier one left and makes only the new ones. Each test image is
  evaluated at its 9 one-pixel shifts (the shifts training augments with), about 3,240 test
  images per seed: a resolution of 0.03 points. Test cross-entropy is reported beside
  accuracy.
- **Narrow models** (:data:`MODELS`, UNIQ stages :data:`MODEL_STAGES`): float accuracy at
  most 98 % on this test set, and 2-bit post-training k-quantile quantization loses more than
  10 points (measured, in the tables).
- **Paired.** One float model per (model, seed); every method starts from it and sees the
  same data order. For each method, the paired difference to UNIQ's default over the seeds,
  with a 95 % t interval (n - 1 degrees of freedom).
- **Schedules**, each the whole fine-tune of every fine-tuned method (same epochs, same
  optimizer, same rate schedule): ``short`` (Adam, cosine decay to 0, 2 epochs per stage, as
  bench/accuracy.py), ``reference`` (the reference code's recipe scaled down: SGD with
  momentum 0.9 and weight decay, a longer first stage, a constant rate that drops 10x only
  for the final epochs) and ``short1`` (``short`` with one-epoch stages, where the default
  has no polish, against a polish of half an epoch; three methods, :data:`SCHEDULE_METHODS`).
- **The freezing study** (:data:`STUDY_METHODS`, default schedule, 8-bit activations): UNIQ's
  defaults with the earlier stages trained on instead of frozen, and with two more final
  epochs, to see what the straight-through peers gain at 3-4 bits by training every layer.
- **Equal tuning.** Each fine-tuned method gets its learning rate from the same three-value
  sweep per schedule (W2A8, seed 0, on a validation fifth held out of seed 0's training
  folds; best validation accuracy, then cross-entropy).
- **Deterministic.** ``tf.config.experimental.enable_op_determinism`` and seeds on every
  random op: the same command gives the same numbers.

The suite's code, one idea per module:

- ``bench/lowbit.py`` (this module): the grid the suite runs (models, schedules, methods, bits
  and seeds), one child process per part, the merge, the noise-model measurements and the
  command line;
- ``bench/lowbit_data.py``: folds, shifted test sets, data sets, the two models, float training;
- ``bench/lowbit_methods.py``: the methods, the schedules, building and fine-tuning a method and
  the learning-rate sweep;
- ``bench/lowbit_report.py``: summary statistics, targets, tables, plots, the docs section and
  the files a run writes.

Run alone (one process per model, schedule and method, two at a time):

    .venv/bin/python -m bench.lowbit --output_dir=outputs/bench     # full (hours, 2 cores)
    .venv/bin/python -m bench.lowbit --quick --output_dir=/tmp/lb   # quick (~1 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from bench import common
from bench.lowbit_data import (
    FLOAT_EPOCHS,
    MODELS,
    SHIFTS,
    float_model,
    folds,
)
from bench.lowbit_methods import (
    FINE_TUNED,
    METHODS,
    QUICK_SCHEDULES,
    REFERENCE_METHOD,
    SCHEDULES,
    fine_tune,
    sweep,
)
from bench.lowbit_report import (
    summary,
    write_outputs,
)
from uniq_tf._keras import keras, tf
from uniq_tf.cost import bops

ROOT = Path(__file__).resolve().parents[1]

BITS = ((2, 8), (2, 4), (3, 8), (4, 8))
# The reference schedule is 1.5x longer; it compares schedules at the two lowest 8-bit pairs.
SCHEDULE_BITS = {"short": BITS, "reference": ((2, 8), (3, 8)), "short1": ((2, 8), (3, 8))}
# One-epoch stages (where the default has no polish): does half an epoch of polish pay off?
SCHEDULE_METHODS = {"short1": ("uniq", "uniq_half", "kquantile_ste")}
# The freezing study runs on the default schedule, at the 8-bit pairs.
STUDY_METHODS = ("uniq_nofreeze", "uniq_final4")
STUDY_BITS = ((2, 8), (3, 8), (4, 8))
MAIN_METHODS = tuple(m for m in METHODS if m != "uniq_half" and m not in STUDY_METHODS)
# Seeds per schedule, and more at W2A8 for UNIQ's defaults and its fine-tuned peers, so that
# their paired intervals resolve 2-bit differences (at most +-2 points; 40 seeds left the widest
# at +-2.7 and +-3.6, and an interval narrows as 1/sqrt(n)), and for the freezing study, whose
# differences 40 seeds already resolve: seed s trains on the folds of s % 5 from its own float
# model and data order (module docstring).
SCHEDULE_SEEDS = {"short": 10, "reference": 10, "short1": 10}
SEED_COUNTS = {"short": {"W2A8": 80}}
WIDE_METHODS = ("uniq", "kquantile_ste", "uniform_qat", "lsq", "cluster_kmeans")
STUDY_SEED_COUNTS = {"short": {"W2A8": 40}}
SEEDS = tuple(range(SCHEDULE_SEEDS["short"]))


# ---------------------------------------------------------------- parts (one process each)


@dataclasses.dataclass
class Part:
    """One process's work: every bit width and seed of one (model, schedule, method)."""

    model: str
    schedule: str
    method: str
    seeds: tuple[int, ...] = SEEDS
    bits: tuple[tuple[int, int], ...] = BITS
    float_epochs: int = FLOAT_EPOCHS
    quick: bool = False
    floats_only: bool = False
    seed_counts: dict = dataclasses.field(default_factory=dict)  # "W2A8" -> seeds 0..n-1

    def seeds_for(self, bits: tuple[int, int]) -> tuple[int, ...]:
        count = self.seed_counts.get(f"W{bits[0]}A{bits[1]}")
        return self.seeds if count is None else tuple(range(count))


def run_part(part: Part, float_dir: str, progress=print, earlier: dict | None = None) -> dict:
    """Every run of ``part``; the runs (and the learning rate) of ``earlier``, the result of
    the same part with fewer seeds (:func:`_earlier`), are kept, not run again: runs are
    deterministic, so a run with more seeds only adds the new ones."""
    tf.config.experimental.enable_op_determinism()
    warnings.filterwarnings("ignore", message=".*HDF5 file.*")
    if part.floats_only:
        for seed in part.seeds:
            _, metrics = float_model(part.model, seed, float_dir, part.float_epochs)
            progress(f"{part.model} float seed {seed}: {100 * metrics['accuracy']:.2f} %")
        float_model(part.model, 0, float_dir, part.float_epochs, validation=True)
        return {}
    schedules = QUICK_SCHEDULES if part.quick else SCHEDULES
    schedule = schedules[part.schedule]
    if earlier is not None:
        rate, trials = earlier["rate"], earlier["sweep"]
        kept = {(r["weight_bits"], r["activation_bits"], r["seed"]): r for r in earlier["runs"]}
        progress(f"{part.model} {part.schedule} {part.method}: {len(kept)} runs of an earlier "
                 "run kept")
    else:
        rate, trials = (sweep(part.method, part.model, schedule, float_dir, part.float_epochs,
                              progress) if part.method in FINE_TUNED else (None, []))
        kept = {}
    runs = []
    for bits in part.bits:
        for seed in part.seeds_for(bits):
            if (*bits, seed) in kept:
                runs.append(kept[(*bits, seed)])
                continue
            start = time.perf_counter()
            float_, _ = float_model(part.model, seed, float_dir, part.float_epochs)
            result = fine_tune(part.method, part.model, float_, seed, bits, schedule, rate)
            runs.append({"model": part.model, "schedule": part.schedule,
                         "method": part.method, "weight_bits": bits[0],
                         "activation_bits": bits[1], "seed": seed, "rate": rate, **result})
            progress(f"{part.model} {part.schedule} {part.method} W{bits[0]}A{bits[1]} seed "
                     f"{seed}: {100 * result['accuracy']:.2f} % "
                     f"({time.perf_counter() - start:.0f} s)")
            keras.backend.clear_session()
    return {"part": dataclasses.asdict(part), "rate": rate, "sweep": trials, "runs": runs}


# ---------------------------------------------------------------- noise models (docs table)


def noise_errors(bits_list=(2, 3, 4), n: int = 1_000_000) -> list[dict]:
    """Per noise model and bit width, on standard normal weights (seeded): the noisy tensor's
    mean squared error to w and its std, against the hard quantizer's, and the share of noisy
    weights beyond the outer codebook level."""
    from uniq_tf.method import kquantile

    rows = []
    for bits in bits_list:
        w = tf.random.stateless_normal([1, n], seed=[bits, 0], dtype=tf.float64)
        hard = kquantile.quantize(w, bits).numpy()
        for noise in kquantile.NOISE_MODELS:
            tf.random.set_seed(bits)
            noisy = kquantile.add_noise(w, bits, noise=noise).numpy()
            rows.append({
                "bits": bits, "noise": noise,
                "mse": float(np.mean((noisy - w.numpy()) ** 2)),
                "hard_mse": float(np.mean((hard - w.numpy()) ** 2)),
                "std": float(noisy.std()), "hard_std": float(hard.std()),
                "beyond_outer": float(np.mean((noisy > hard.max() + 1e-9)
                                              | (noisy < hard.min() - 1e-9))),
            })
    return rows


# ---------------------------------------------------------------- driver


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one model, 2 seeds, W2A8")
    parser.add_argument("--seeds", type=int, default=0,
                        help="run seeds 0..N-1 everywhere (default: SCHEDULE_SEEDS, SEED_COUNTS)")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", default=None)
    parser.add_argument("--schedules", default=None)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--docs_dir", default="",
                        help="also splice the section into DOCS_DIR/benchmarks.md")
    parser.add_argument("--render_only", action="store_true",
                        help="no runs: tables, plots and docs from OUTPUT_DIR/lowbit.json")
    parser.add_argument("--reference", default=REFERENCE_METHOD,
                        help="the UNIQ method every paired difference is taken against")
    parser.add_argument("--note", default="",
                        help="how the run was made, for the section's first line (for example "
                             "the invocations of a stopped and resumed run)")
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def configuration(args) -> dict:
    if args.quick:
        config = {"models": ["tiny_cnn"], "schedules": ["short"],
                  "methods": ["uniq", "uniq_paper", "kquantile_ste", "lsq", "ptq_kquantile"],
                  "seeds": [0, 1], "bits": [[2, 8]], "float_epochs": 12,
                  "schedule_seeds": {}, "seed_counts": {}, "study_seed_counts": {}}
    else:
        config = {"models": list(MODELS), "schedules": list(SCHEDULES),
                  "methods": list(METHODS), "seeds": list(SEEDS),
                  "bits": [list(b) for b in BITS], "float_epochs": FLOAT_EPOCHS,
                  "schedule_seeds": dict(SCHEDULE_SEEDS), "seed_counts": dict(SEED_COUNTS),
                  "study_seed_counts": dict(STUDY_SEED_COUNTS)}
    for key in ("models", "schedules", "methods"):
        value = getattr(args, key)
        if value:
            config[key] = value.split(",")
    if args.seeds:
        config.update(seeds=list(range(args.seeds)), schedule_seeds={}, seed_counts={},
                      study_seed_counts={})
    return config


def parts_of(config: dict, quick: bool) -> list[Part]:
    """One part per (model, schedule, method) the configuration runs."""
    parts = []
    for model in config["models"]:
        for schedule in config["schedules"]:
            count = config["schedule_seeds"].get(schedule)
            seeds = tuple(config["seeds"]) if count is None else tuple(range(count))
            for method in config["methods"]:
                study = method in STUDY_METHODS and schedule == "short"
                if method not in SCHEDULE_METHODS.get(schedule, MAIN_METHODS) and not study:
                    continue
                bits = tuple(b for b in map(tuple, config["bits"])
                             if b in SCHEDULE_BITS.get(schedule, BITS)
                             and (not study or b in STUDY_BITS))
                counts = (config["seed_counts"] if method in WIDE_METHODS
                          else config["study_seed_counts"] if study else {}).get(schedule, {})
                parts.append(Part(model, schedule, method, seeds, bits, config["float_epochs"],
                                  quick, seed_counts=counts))
    return parts


def all_seeds(parts: list[Part]) -> tuple[int, ...]:
    """Every seed some part runs (the float models to train)."""
    return tuple(sorted({seed for p in parts for bits in p.bits for seed in p.seeds_for(bits)}))


def _part_command(part: Part, parts_dir: str) -> list[str]:
    return [sys.executable, "-m", "bench.lowbit", f"--output_dir={parts_dir}",
            f"--part={json.dumps(dataclasses.asdict(part))}"]


def _part_path(part: Part, parts_dir: str) -> Path:
    return Path(parts_dir, f"{part.model}_{part.schedule}_{part.method}.json")


def _fields(part: Part) -> dict:
    """The part as its result file records it (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(part)))


def _earlier(part: Part, parts_dir: str) -> dict | None:
    """The result an earlier run left for this part, with the same or other seeds (and
    everything else the same), or None."""
    path = _part_path(part, parts_dir)
    if not path.exists():
        return None
    earlier = json.loads(path.read_text(encoding="utf-8"))
    same = ("model", "schedule", "method", "bits", "float_epochs", "quick", "floats_only")
    mine = _fields(part)
    return earlier if all(earlier["part"].get(k) == mine[k] for k in same) else None


def _done(part: Part, parts_dir: str) -> bool:
    """True if an earlier run (killed, or with other parts) left this part's results, seeds
    included: a run resumes where it stopped."""
    earlier = _earlier(part, parts_dir)
    return earlier is not None and earlier["part"] == _fields(part)


def _pool(commands: list[list[str]], jobs: int) -> None:
    waiting, running = list(commands), []
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    while waiting or running:
        while waiting and len(running) < jobs:
            command = waiting.pop(0)
            print(f"== lowbit part {json.loads(command[-1].split('=', 1)[1])}", flush=True)
            running.append(subprocess.Popen(command, cwd=ROOT, env=env))
        time.sleep(0.5)
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            if process.returncode:
                for other in running:
                    other.terminate()
                raise SystemExit(f"lowbit part failed: {process.args[-1]}")


def main(argv=None) -> dict:
    args = _parse_args(argv)
    output_dir = os.path.abspath(args.output_dir)
    if args.part:
        fields = json.loads(args.part)
        part = Part(**{**fields, "seeds": tuple(fields["seeds"]),
                       "bits": tuple(tuple(b) for b in fields["bits"])})
        result = run_part(part, os.path.join(output_dir, "float_models"),
                          functools.partial(print, flush=True),
                          None if part.floats_only else _earlier(part, output_dir))
        if not part.floats_only:
            common.write_json(str(_part_path(part, output_dir)), result)
        return result
    if args.render_only:
        results = json.loads(Path(output_dir, "lowbit.json").read_text(encoding="utf-8"))
        results["reference"] = args.reference
        if args.note:
            results["note"] = args.note
        results["summary"] = summary(results)
        results["noise_errors"] = noise_errors()
        write_outputs(results, output_dir, args.docs_dir)
        return results
    started = time.perf_counter()
    config = configuration(args)
    parts_dir = os.path.join(output_dir, "lowbit_parts")
    parts = parts_of(config, args.quick)
    # Float models first (one process per model), so that parts only load them.
    _pool([_part_command(Part(m, "", "", all_seeds(parts), (),
                              config["float_epochs"], args.quick, floats_only=True), parts_dir)
           for m in config["models"]], args.jobs)
    costly = {"narrow_resnet": 3}
    parts.sort(key=lambda p: -costly.get(p.model, 1) * (p.method in FINE_TUNED))
    _pool([_part_command(p, parts_dir) for p in parts if not _done(p, parts_dir)], args.jobs)
    results = merge(config, parts, parts_dir, args.reference)
    results["seconds"] = round(time.perf_counter() - started, 1)
    if args.note:
        results["note"] = args.note
    results["command"] = " ".join(["python -m bench.lowbit"] + [
        a for a in (argv if argv is not None else sys.argv[1:])
        if not a.startswith(("--output_dir", "--docs_dir", "--note"))])
    write_outputs(results, output_dir, args.docs_dir)
    return results


def merge(config: dict, parts: list[Part], parts_dir: str,
          reference: str = REFERENCE_METHOD) -> dict:
    loaded = [json.loads(Path(parts_dir, f"{p.model}_{p.schedule}_{p.method}.json").read_text(
        encoding="utf-8")) for p in parts]
    results = {**config, "runs": [r for part in loaded for r in part["runs"]],
               "rates": {f"{p['part']['model']}/{p['part']['schedule']}/{p['part']['method']}":
                         p["rate"] for p in loaded},
               "sweeps": {f"{p['part']['model']}/{p['part']['schedule']}/{p['part']['method']}":
                          p["sweep"] for p in loaded},
               "float": [], "bops": {}, "epochs": {}, "test_images": {},
               "reference": reference, "noise_errors": noise_errors()}
    float_dir = Path(parts_dir, "float_models")
    results["seeds"] = list(all_seeds(parts))
    for model in config["models"]:
        for seed in results["seeds"]:
            metrics = json.loads(Path(float_dir, f"{model}_seed{seed}.json").read_text(
                encoding="utf-8"))
            results["float"].append({"model": model, "seed": seed, **metrics})
            results["test_images"][str(seed)] = len(folds(seed)[3]) * len(SHIFTS)
        reference = MODELS[model]()
        results["bops"][model] = {"float": bops.summary(reference).total_bops} | {
            f"W{w}A{a}": bops.summary(reference, weight_bits=w, activation_bits=a).total_bops
            for w, a in config["bits"]}
        for schedule in config["schedules"]:
            epochs = {r["epochs"] for r in results["runs"]
                      if r["model"] == model and r["schedule"] == schedule and r["epochs"]}
            results["epochs"][f"{model}/{schedule}"] = max(epochs) if epochs else 0
    results["summary"] = summary(results)
    results["machine"] = common.machine()
    return results


if __name__ == "__main__":
    main()
