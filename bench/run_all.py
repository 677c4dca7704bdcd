"""Runs the three benchmarks and writes their results and docs/benchmarks.md.

    .venv/bin/python bench/run_all.py            # make bench: the full run (~35 min on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # make bench-quick: a smoke run (< 5 min)
    .venv/bin/python bench/run_all.py --smoke --output_dir=/tmp/b   # the CI test's run

Each benchmark runs in its own Python process (bench/accuracy.py, bench/train_speed.py,
bench/deploy.py), so that one's memory and traced graphs do not slow the next one's timings.
Outputs in ``--output_dir`` (default outputs/bench): accuracy.json, train_speed.json,
deploy.json, each with a markdown table (.md), the accuracy-vs-BOPs plots (PNG), run.json
(machine, command, durations) and benchmarks.md. The full run also writes
``docs/benchmarks.md`` and its plots in ``docs/img/`` (``--docs_dir`` changes or, with
``--docs_dir=""``, skips that); quick and smoke runs never touch docs/ unless given
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

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from bench import common, report  # noqa: E402

BENCHMARKS = ("accuracy", "train_speed", "deploy")


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run under 5 minutes")
    size.add_argument("--smoke", action="store_true", help="the smallest run (CI test)")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--docs_dir", default=None,
                        help="where benchmarks.md and img/ go (default: docs/ for the full "
                             "run, nowhere for --quick/--smoke); empty string: nowhere")
    parser.add_argument("--jobs", type=int, default=2,
                        help="parallel processes for the full accuracy run (one per model)")
    parser.add_argument("--render_only", action="store_true",
                        help="no runs: rewrite benchmarks.md (and the docs) from the results "
                             "already in --output_dir (after editing bench/findings.md)")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    return parser.parse_args(argv)


def _mode(args) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def _command(name: str, mode: str, output_dir: str, *extra: str) -> list[str]:
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), f"--output_dir={output_dir}"]
    return command + ([] if mode == "full" else [f"--{mode}"]) + list(extra)


def _start(command: list[str]) -> subprocess.Popen:
    print(f"== {' '.join(command)}", flush=True)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(command, cwd=ROOT, env=env)


def _wait(processes: list[subprocess.Popen]) -> None:
    codes = [p.wait() for p in processes]
    failed = [" ".join(p.args) for p, code in zip(processes, codes, strict=True) if code]
    if failed:
        raise SystemExit(f"Benchmark process failed: {failed}")


def run_benchmark(name: str, mode: str, output_dir: str, jobs: int = 1) -> float:
    """Runs bench/<name>.py in child processes; returns the wall-clock seconds.

    The accuracy benchmark of the full run is split by model over ``jobs`` parallel
    processes: most of its time is single-threaded graph tracing, which a second process
    overlaps. Timing benchmarks always run alone.
    """
    start = time.perf_counter()
    if name == "accuracy" and mode == "full" and jobs > 1:
        from bench import accuracy

        names = list(accuracy.AccuracyConfig().models)
        for first in range(0, len(names), jobs):
            _wait([
                _start(_command(name, mode, output_dir, f"--models={model}",
                                f"--output_name=accuracy_{model}", "--json_only"))
                for model in names[first:first + jobs]
            ])
        parts = [json.loads(Path(output_dir, f"accuracy_{m}.json").read_text(encoding="utf-8"))
                 for m in names]
        accuracy.write_outputs(accuracy.merge(parts), output_dir)
    else:
        _wait([_start(_command(name, mode, output_dir))])
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = _parse_args(argv)
    mode = _mode(args)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
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
        common.write_text(os.path.join(docs_dir, "benchmarks.md"), text)
        print(f"Wrote {os.path.join(docs_dir, 'benchmarks.md')}")
    print(f"Benchmarks ({mode}) done in {run_info['total_seconds'] / 60:.1f} min; "
          f"outputs in {output_dir}")


def _run(args, mode: str, only: list[str], output_dir: str) -> dict:
    """Runs the benchmarks; returns (and writes to run.json) the machine, command and times."""
    started = time.perf_counter()
    seconds = {name: round(run_benchmark(name, mode, output_dir, args.jobs), 1) for name in only}
    run_info = {
        "mode": mode,
        "command": {"full": "make bench", "quick": "make bench-quick",
                    "smoke": ".venv/bin/python bench/run_all.py --smoke"}[mode],
        "seconds": seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": common.machine(),
    }
    common.write_json(os.path.join(output_dir, "run.json"), run_info)
    return run_info


def _copy_plots(source: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(source)):
        if name.endswith(".png"):
            shutil.copyfile(os.path.join(source, name), os.path.join(target, name))


if __name__ == "__main__":
    main()
