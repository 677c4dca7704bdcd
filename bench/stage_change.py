"""Cost of GradualQuantization's stage changes: wall time of stage-change epochs
against the other epochs, train-function traces, and resident memory over a run of every stage.

A UNIQ model (W4A8) is trained with ``stages="layer"`` (one kernel layer per stage) on random
data, ``--steps_per_epoch`` steps per epoch and ``--epochs_per_stage`` epochs per stage, with SGD
(momentum 0.9, weight decay 5e-4) as in the reference schedule. Each epoch's wall time is taken
from ``on_epoch_begin`` to ``on_epoch_end`` (so it includes the stage switch and any retrace
done in its first step), and the process's resident memory (VmRSS) at its end. An epoch is a
"stage change" when its stage differs from the previous epoch's (the first epoch, which traces
the train function in any case, is reported apart).

    .venv/bin/python -m bench.stage_change --quick
    .venv/bin/python -m bench.stage_change --model=resnet18 --input_size=32 --output=out.json
    .venv/bin/python -m bench.stage_change --section=a.json,b.json --docs_dir=docs

``--section`` runs nothing: it writes section 7 of docs/benchmarks.md (a table, one row per
result file, and the targets) from earlier ``--output`` files.

Reported as ratios: median stage-change epoch / median other epoch, RSS after the last stage
/ RSS after the first; with ``--overhead_steps``, the per-step cost of the freezing itself
(every kernel frozen, against no callback); with ``--float_ratio_steps``, the UNIQ train step
over the float model's at this size. With ``--epochs_per_stage=1`` every epoch after
the first changes stage, so the "other" epochs come from the final (all quantized) epochs:
pass --final_epochs >= 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import uniq_tf
from bench import common
from uniq_tf._keras import keras, tf
from uniq_tf.schedule.gradual import GradualQuantization
from uniq_tf.zoo import models


def rss_mib() -> float:
    """The process's resident set size (VmRSS) in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class EpochRecorder(keras.callbacks.Callback):
    """Per epoch: wall time, stage, train-step traces so far and RSS at its end."""

    def __init__(self, schedule, traces, verbose=True):
        super().__init__()
        self.schedule, self.traces, self.verbose = schedule, traces, verbose
        self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        stage = self.schedule.stage_at(epoch)
        change = epoch == 0 or stage != self.schedule.stage_at(epoch - 1)
        row = {"epoch": epoch, "stage": stage, "stage_change": change, "seconds": seconds,
               "traces": self.traces[0], "rss_mib": rss_mib()}
        self.rows.append(row)
        if self.verbose:
            print(f"epoch {epoch + 1:3d} stage {stage:3d}{' *' if change else '  '} "
                  f"{seconds:7.2f} s  traces {row['traces']:3d}  RSS {row['rss_mib']:7.0f} MiB",
                  flush=True)


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def float_ratio(args, shape, data) -> dict:
    """Median epoch time of ``--float_ratio_steps`` steps of the UNIQ model (every kernel
    NOISY, activations quantized: quantize_model's default, UNIQ's costliest training
    forward) over the float model's, same optimizer and data, in the order float, uniq, uniq,
    float; each fit's first epoch (the trace) left out."""
    built = {}
    for name in ("float", "uniq"):
        keras.utils.set_random_seed(0)
        model = models.get_model(args.model, shape, args.num_classes)
        if name == "uniq":
            model = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=5e-4),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=args.jit_compile)
        built[name] = model
    times = {"float": [], "uniq": []}
    for name in ("float", "uniq", "uniq", "float"):
        timer = EpochTimer()
        built[name].fit(data, epochs=1 + args.overhead_rounds,
                        steps_per_epoch=args.float_ratio_steps, verbose=0, callbacks=[timer])
        times[name] += timer.seconds[1:]
        print(f"  {name}: epochs of {args.float_ratio_steps} steps "
              f"{[round(t, 3) for t in timer.seconds]} s", flush=True)
    flt, unq = statistics.median(times["float"]), statistics.median(times["uniq"])
    return {"steps_per_epoch": args.float_ratio_steps, "median_float_step_seconds":
            flt / args.float_ratio_steps, "median_uniq_step_seconds": unq /
            args.float_ratio_steps, "uniq_over_float": unq / flt}


def run(args) -> dict:
    keras.utils.set_random_seed(0)
    shape = (args.input_size, args.input_size, 3)
    model = uniq_tf.quantize_model(models.get_model(args.model, shape, args.num_classes),
                                   weight_bits=4, activation_bits=8)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=5e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=args.jit_compile)
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps_per_epoch
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, args.num_classes, n)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).repeat()
    schedule = GradualQuantization("layer", epochs_per_stage=args.epochs_per_stage,
                                   final_epochs=args.final_epochs, polish_epochs=0, verbose=0)
    n_stages = len(schedule.plan(model))
    epochs = schedule.total_epochs(model)
    traces = common.count_traces(model)
    recorder = EpochRecorder(schedule, traces, verbose=not args.silent)
    print(f"{args.model} {shape}, batch {args.batch_size}, {n_stages} stages, {epochs} epochs "
          f"of {args.steps_per_epoch} steps; RSS before fit {rss_mib():.0f} MiB", flush=True)
    start = time.perf_counter()
    callbacks = [recorder] if args.no_schedule else [schedule, recorder]
    model.fit(data, epochs=epochs, steps_per_epoch=args.steps_per_epoch, verbose=0,
              callbacks=callbacks)
    total = time.perf_counter() - start
    rows = recorder.rows
    changes = [r["seconds"] for r in rows[1:] if r["stage_change"]]
    others = [r["seconds"] for r in rows[1:] if not r["stage_change"]]
    first_stage_end = max(r["epoch"] for r in rows if r["stage"] == 0)
    last_stage_end = max(r["epoch"] for r in rows if r["stage"] == n_stages - 1)
    summary = {
        "model": args.model, "input_shape": list(shape), "batch_size": args.batch_size,
        "steps_per_epoch": args.steps_per_epoch, "epochs_per_stage": args.epochs_per_stage,
        "jit_compile": args.jit_compile, "no_schedule": args.no_schedule,
        "stages": n_stages, "epochs": epochs,
        "fit_seconds": total,
        "traces": traces[0],
        "first_epoch_seconds": rows[0]["seconds"],
        "median_stage_change_epoch_seconds": statistics.median(changes) if changes else None,
        "max_stage_change_epoch_seconds": max(changes) if changes else None,
        "median_other_epoch_seconds": statistics.median(others) if others else None,
        "stage_change_over_other": (statistics.median(changes) / statistics.median(others)
                                    if changes and others else None),
        "rss_mib_after_first_stage": rows[first_stage_end]["rss_mib"],
        "rss_mib_after_last_stage": rows[last_stage_end]["rss_mib"],
        "rss_last_over_first_stage": (rows[last_stage_end]["rss_mib"]
                                      / rows[first_stage_end]["rss_mib"]),
        "epochs_detail": rows,
    }
    if args.overhead_steps:
        summary["freezing_step_overhead"] = step_overhead(model, data, schedule, epochs, args)
    if args.float_ratio_steps:
        summary["uniq_over_float_step"] = float_ratio(args, shape, data)
    return summary


def step_overhead(model, data, schedule, epochs, args) -> dict:
    """Median epoch time of ``--overhead_steps`` steps with every kernel frozen (the final
    stage of a new GradualQuantization fit: the restore runs for all kernels and slots) over
    the same without the callback, in the order plain, frozen, frozen, plain; the first epoch
    of each fit (its trace) is left out. Weights stay QUANTIZED in both."""
    times = {"plain": [], "frozen": []}
    final = epochs - args.final_epochs  # the first epoch in which everything is frozen
    for variant in ("plain", "frozen", "frozen", "plain"):
        recorder = EpochRecorder(schedule, [0], verbose=False)
        callbacks = [recorder]
        start = 0
        if variant == "frozen":
            callbacks.insert(0, GradualQuantization(
                "layer", epochs_per_stage=args.epochs_per_stage, final_epochs=args.final_epochs,
                polish_epochs=0, verbose=0))
            start = final
        model.fit(data, initial_epoch=start, epochs=start + 1 + args.overhead_rounds,
                  steps_per_epoch=args.overhead_steps, verbose=0, callbacks=callbacks)
        times[variant] += [r["seconds"] for r in recorder.rows[1:]]
        print(f"  {variant}: epochs of {args.overhead_steps} steps "
              f"{[round(r['seconds'], 3) for r in recorder.rows]} s", flush=True)
    plain, frozen = statistics.median(times["plain"]), statistics.median(times["frozen"])
    return {"steps_per_epoch": args.overhead_steps, "median_plain_epoch_seconds": plain,
            "median_frozen_epoch_seconds": frozen, "frozen_over_plain": frozen / plain}


SECTION = "stage_change"
CHANGE_LIMIT = 2.0  # a stage-change epoch at most this many times a normal epoch
MEMORY_LIMIT = 1.10  # resident memory after the last stage over after the first


def _row(result: dict) -> list[str]:
    shape = "x".join(str(v) for v in result["input_shape"][:2])
    what = result["model"] + (" (XLA)" if result.get("jit_compile") else "") + (
        ", control: no schedule" if result.get("no_schedule") else "")
    overhead = result.get("freezing_step_overhead", {}).get("frozen_over_plain")
    return [what, shape, str(result["batch_size"]), str(result["stages"]),
            str(result["epochs"]), str(result["traces"]),
            f"{result['stage_change_over_other']:.2f}x",
            f"{result['rss_last_over_first_stage']:.2f}x",
            f"{result['fit_seconds']:.1f}",
            "-" if overhead is None else f"{overhead:.2f}x"]


def section(results: list[dict], commands: list[str]) -> str:
    """Section 7 of docs/benchmarks.md from the runs' summaries: a table and the targets."""
    machine = common.machine()
    scheduled = [r for r in results if not r.get("no_schedule")]
    worst_change = max(r["stage_change_over_other"] for r in scheduled)
    worst_memory = max(r["rss_last_over_first_stage"] for r in scheduled)
    start, end = common.section_markers(SECTION)
    return "\n".join([
        start,
        "## 7. Stage changes (`bench/stage_change.py`, run by hand)",
        "",
        f"Tabled on {machine['date']} ({machine['cpu']}, {machine['cores']} cores, TensorFlow "
        f"{machine['tensorflow']}) from the runs of: "
        + "; ".join(f"`{c}`" for c in commands)
        + ". UNIQ W4A8, `GradualQuantization(\"layer\")` (one kernel layer per stage), SGD "
        "with momentum 0.9 and weight decay 5e-4, random data; a stage-change epoch is one "
        "whose stage differs from the epoch before (the first epoch, which traces, is left "
        "out). Memory is the process's resident set after the last stage over after the "
        "first; freezing overhead is an epoch with every kernel frozen over the same epoch "
        "without the callback.",
        "",
        common.markdown_table(
            ["model", "input", "batch", "stages", "epochs", "train-step traces",
             "stage-change epoch / other epoch", "memory, last / first stage", "fit (s)",
             "freezing overhead"], [_row(r) for r in results]),
        "",
        f"Targets: a stage-change epoch at most {CHANGE_LIMIT:g}x a normal epoch: "
        + ("**met**" if worst_change <= CHANGE_LIMIT else "**not met**")
        + f" (at most {worst_change:.2f}x); resident memory after the last stage within "
        f"{MEMORY_LIMIT - 1:.0%} of after the first: "
        + ("**met**" if worst_memory <= MEMORY_LIMIT else "**not met**")
        + f" (at most {worst_memory:.2f}x).",
        end,
        "",
    ])


def write_section(paths: list[str], docs_dir: str | None) -> str:
    results = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    commands = [r.get("command", "python -m bench.stage_change") for r in results]
    text = section(results, commands)
    print(text)
    if docs_dir:
        page_path = Path(docs_dir) / "benchmarks.md"
        page = common.splice_section(page_path.read_text(encoding="utf-8"), SECTION, text)
        common.write_text(str(page_path), page)
        print(f"wrote section '{SECTION}' of {page_path}")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20", help="uniq_tf.models name")
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps_per_epoch", type=int, default=2)
    parser.add_argument("--epochs_per_stage", type=int, default=2)
    parser.add_argument("--final_epochs", type=int, default=2)
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--overhead_steps", type=int, default=0,
                        help="if > 0, also time epochs of this many steps with every kernel "
                        "frozen against the same without the callback")
    parser.add_argument("--overhead_rounds", type=int, default=3,
                        help="timed epochs per fit of the overhead measurements")
    parser.add_argument("--float_ratio_steps", type=int, default=0,
                        help="if > 0, also time epochs of this many steps of the UNIQ model "
                        "(all NOISY) against the float model")
    parser.add_argument("--quick", action="store_true",
                        help="resnet20, batch 16, 1 step per epoch, overhead over 10 steps")
    parser.add_argument("--no_schedule", action="store_true",
                        help="control run: the same epochs without GradualQuantization (every "
                        "kernel NOISY throughout; stages are only labels), to tell the memory "
                        "that stage changes add from the allocator's own warm-up")
    parser.add_argument("--silent", action="store_true", help="no line per epoch")
    parser.add_argument("--output", help="write the summary (JSON) here")
    parser.add_argument("--section", default="",
                        help="comma-separated --output files: write section 7 from them "
                        "(runs nothing)")
    parser.add_argument("--docs_dir", default=None,
                        help="with --section: splice it into <docs_dir>/benchmarks.md")
    args = parser.parse_args(argv)
    if args.section:
        write_section([p for p in args.section.split(",") if p], args.docs_dir)
        return 0
    if args.quick:
        args.model, args.batch_size, args.steps_per_epoch = "resnet20", 16, 1
        args.overhead_steps = args.overhead_steps or 10
    summary = run(args)
    summary["command"] = " ".join(["python -m bench.stage_change"] + [
        a for a in (argv if argv is not None else sys.argv[1:])
        if not a.startswith("--output")])
    short = {k: v for k, v in summary.items() if k != "epochs_detail"}
    print(json.dumps(short, indent=1), flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
