"""Runs the benchmarks and writes their results and docs/benchmarks.md.

    .venv/bin/python -m bench.run_all            # make bench: the full run (~1 h, 2 cores)
    .venv/bin/python -m bench.run_all --quick    # make bench-quick: < 5 min; CI's test runs it

Each benchmark runs in child processes (bench/accuracy.py, bench/lowbit.py (full runs only),
bench/train_speed.py, bench/deploy.py), so that one's memory and traced graphs do not slow
the next one's timings;
the accuracy benchmark runs one process per (model, method), two at a time (``--jobs``), from
float models trained once and saved under accuracy_parts/. Outputs in ``--output_dir``
(default outputs/bench): accuracy.json, train_speed.json, deploy.json, each with a markdown
table (.md), the accuracy-vs-BOPs plots (PNG), run.json (machine, command, durations) and
benchmarks.md; ``--render_only`` rewrites benchmarks.md from them. The full run also writes
``docs/benchmarks.md`` and its plots in ``docs/img/`` (``--docs_dir`` changes or, with
``--docs_dir=""``, skips that); quick runs never touch docs/ unless given
``--docs_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import common, report

ROOT = Path(__file__).resolve().parents[1]

BENCHMARKS = ("accuracy", "lowbit", "train_speed", "deploy")
# The low-bit suite's quick mode has its own test (tests/test_bench_lowbit.py, run twice).
QUICK_BENCHMARKS = ("accuracy", "train_speed", "deploy")


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the quick run, under 5 minutes (CI runs it as a test)")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--docs_dir", default=None,
                        help="where benchmarks.md and img/ go (default: docs/ for the full "
                             "run, nowhere for --quick); empty string: nowhere")
    parser.add_argument("--jobs", type=int, default=2,
                        help="parallel processes for the accuracy benchmark")
    parser.add_argument("--render_only", action="store_true",
                        help="no runs: rewrite benchmarks.md (and the docs) from the results "
                             "already in --output_dir (after editing bench/findings.md)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all; "
                             f"--quick: {','.join(QUICK_BENCHMARKS)})")
    return parser.parse_args(argv)


def _mode(args) -> str:
    return "quick" if args.quick else "full"


def _command(name: str, mode: str, output_dir: str, *extra: str) -> list[str]:
    command = [sys.executable, "-m", f"bench.{name}", f"--output_dir={output_dir}"]
    return command + ([] if mode == "full" else [f"--{mode}"]) + list(extra)


def _start(command: list[str]) -> subprocess.Popen:
    print(f"== {' '.join(command)}", flush=True)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(command, cwd=ROOT, env=env)


def _wait(processes: list[subprocess.Popen], others: list[subprocess.Popen] = ()) -> None:
    """Waits for ``processes``; if one failed, stops ``others`` (still running) and exits."""
    codes = [p.wait() for p in processes]
    failed = [" ".join(p.args) for p, code in zip(processes, codes, strict=True) if code]
    if failed:
        for process in others:
            process.terminate()
            process.wait()
        raise SystemExit(f"Benchmark process failed: {failed}")


# Rough relative cost of one (model, method) job of the full accuracy run, to start the long
# ones first: staged UNIQ retraces its train function at every stage change.
_MODEL_COST = {"resnet20": 3.0}
_METHOD_COST = {"uniq": 4.0, "uniq_flat": 2.5, "kquantile_ste": 1.5, "cluster_density": 1.5,
                "cluster_kmeans": 1.5, "uniform_qat": 1.0}


def _pool(commands: list[list[str]], jobs: int) -> None:
    """Runs the commands, at most ``jobs`` at a time, in the order given."""
    waiting, running = list(commands), []
    while waiting or running:
        while waiting and len(running) < jobs:
            running.append(_start(waiting.pop(0)))
        time.sleep(1.0)
        done = [p for p in running if p.poll() is not None]
        running = [p for p in running if p not in done]
        _wait(done, running)


def _accuracy_in_parts(mode: str, output_dir: str, jobs: int) -> None:
    """The accuracy run as one process per (model, method), ``jobs`` at a time, after the
    float models are trained and saved (one process per model).

    Separate processes keep memory flat: TensorFlow keeps every traced function of a process
    alive (about 17 MB per trace of the small model's train function, after del,
    clear_session and gc), and staged UNIQ retraces at every stage change. Most of the time
    is single-threaded tracing, which a second process overlaps.
    """
    from bench import accuracy

    config = {"full": accuracy.AccuracyConfig, "quick": accuracy.quick_config}[mode]()
    parts_dir = os.path.join(output_dir, "accuracy_parts")
    float_dir = f"--float_dir={os.path.join(parts_dir, 'float_models')}"
    _pool([_command("accuracy", mode, parts_dir, f"--models={m}", "--float_only", float_dir,
                    f"--output_name={m}_float", "--json_only")
           for m in config.models], jobs)
    parts = sorted(
        ((m, method) for m in config.models for method in config.methods),
        key=lambda p: -_MODEL_COST.get(p[0], 1.0) * _METHOD_COST.get(p[1], 0.5)
        * len(config.seeds[p[0]]) * len(config.bits[p[0]]),
    )
    _pool([_command("accuracy", mode, parts_dir, f"--models={m}", f"--methods={method}",
                    float_dir, f"--output_name={m}_{method}", "--json_only")
           for m, method in parts], jobs)
    # Merged in the configuration's order (the pool ran the dearest parts first).
    results = [json.loads(Path(parts_dir, f"{m}_{method}.json").read_text(encoding="utf-8"))
               for m in config.models for method in config.methods]
    accuracy.write_outputs(accuracy.merge(results), output_dir)


def run_benchmark(name: str, mode: str, output_dir: str, jobs: int = 1) -> float:
    """Runs bench.<name> in child processes; returns the wall-clock seconds. The accuracy
    run is split over processes (:func:`_accuracy_in_parts`); the timing benchmarks always run
    alone."""
    start = time.perf_counter()
    if name == "accuracy":
        _accuracy_in_parts(mode, output_dir, jobs)
    elif name == "lowbit":
        _wait([_start(_command(name, mode, output_dir, f"--jobs={jobs}"))])
    else:
        _wait([_start(_command(name, mode, output_dir))])
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = _parse_args(argv)
    mode = _mode(args)
    only = [n.strip() for n in args.only.split(",") if n.strip()] or list(
        QUICK_BENCHMARKS if mode == "quick" else BENCHMARKS)
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"--only: unknown benchmarks {unknown}; allowed: {list(BENCHMARKS)}")
    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    if args.render_only:
        run_info = json.loads(Path(output_dir, "run.json").read_text(encoding="utf-8"))
        mode, only = run_info["mode"], list(run_info["seconds"])
    else:
        run_info = _run(args, mode, only, output_dir)
    results = {
        name: json.loads(Path(output_dir, f"{name}.json").read_text(encoding="utf-8"))
        for name in only
    }
    docs_dir = args.docs_dir if args.docs_dir is not None else (
        str(ROOT / "docs") if mode == "full" else ""
    )
    text = report.render(results, run_info, image_dir="img")
    common.write_text(os.path.join(output_dir, "benchmarks.md"), text)
    _copy_plots(output_dir, os.path.join(output_dir, "img"))
    if docs_dir:
        _copy_plots(output_dir, os.path.join(docs_dir, "img"))
        path = os.path.join(docs_dir, "benchmarks.md")
        common.write_text(path, _carry_hand_run_sections(path, text))
        print(f"Wrote {os.path.join(docs_dir, 'benchmarks.md')}")
    print(f"Benchmarks ({mode}) done in {run_info['total_seconds'] / 60:.1f} min; "
          f"outputs in {output_dir}")


def _run(args, mode: str, only: list[str], output_dir: str) -> dict:
    """Runs the benchmarks; returns (and writes to run.json) the machine, command and times."""
    started = time.perf_counter()
    seconds = {name: round(run_benchmark(name, mode, output_dir, args.jobs), 1) for name in only}
    run_info = {
        "mode": mode,
        "command": {"full": "make bench", "quick": "make bench-quick"}[mode],
        "seconds": seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": common.machine(),
    }
    common.write_json(os.path.join(output_dir, "run.json"), run_info)
    return run_info


# Sections of benchmarks that run by hand (bench/allocation.py, bench/pipeline.py; bench/fpga/
# needs FINN's own environment): a full run keeps them as they are in the page it replaces.
HAND_RUN_SECTIONS = ("allocation", "fpga", "stage_change", "pipeline")


def _carry_hand_run_sections(path: str, text: str) -> str:
    if not os.path.exists(path):
        return text
    old = Path(path).read_text(encoding="utf-8")
    for name in HAND_RUN_SECTIONS:
        block = common.section_of(old, name)
        if block is not None:
            text = common.splice_section(text, name, block)
    return text


def _copy_plots(source: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(source)):
        if name.endswith(".png"):
            shutil.copyfile(os.path.join(source, name), os.path.join(target, name))


if __name__ == "__main__":
    main()
