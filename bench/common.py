"""What the benchmarks share: the machine description, interleaved timing, statistics, markdown
tables and atomic output (uniq_tf.atomic)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from uniq_tf._keras import keras, tf
from uniq_tf.util import atomic


def machine() -> dict:
    """Cores, CPU model, Python/TensorFlow/TFMOT versions and the date (UTC)."""
    import tensorflow_model_optimization as tfmot

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from ai_edge_litert import __version__ as litert_version
    except ImportError:
        litert_version = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "tfmot": tfmot.__version__,
        "litert": litert_version,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def set_seed(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds (keras.utils.set_random_seed)."""
    keras.utils.set_random_seed(seed)
    random.seed(seed)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of an empty list")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def paired(runs: list[dict], method: str, against: str, key: str = "accuracy"):
    """(mean difference, half-width of its 95 % t interval, n) of ``method`` minus
    ``against`` over the seeds both have, in points (x100)."""
    a = {r["seed"]: r[key] for r in runs if r["method"] == method}
    b = {r["seed"]: r[key] for r in runs if r["method"] == against}
    seeds = sorted(set(a) & set(b))
    d = np.array([100 * (a[s] - b[s]) for s in seeds])
    if len(d) < 2:
        return (float(d.mean()) if len(d) else float("nan")), float("nan"), len(d)
    from scipy.stats import t

    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()), half, len(d)


def interleaved_times(
    variants: Mapping[str, Callable[[], object]],
    rounds: int,
    calls_per_round: int,
    warmup_calls: int = 2,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Wall-clock seconds of every call of every variant, measured round-robin.

    Each round runs ``calls_per_round`` timed calls of each variant, the variants in a fresh
    random order, so that load from other processes on a shared machine falls on all variants
    alike; ``warmup_calls`` untimed calls per variant come first (tracing, caches). A call must
    finish its work before returning (return a value and it is converted to numpy).
    """
    if rounds < 1 or calls_per_round < 1:
        raise ValueError(
            f"rounds and calls_per_round must be >= 1, got {rounds}, {calls_per_round}"
        )
    order = list(variants)
    rng = random.Random(seed)
    for name in order:
        for _ in range(warmup_calls):
            _finish(variants[name]())
    times: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = variants[name]
            for _ in range(calls_per_round):
                start = time.perf_counter()
                _finish(fn())
                times[name].append(time.perf_counter() - start)
    return times


def _finish(result) -> None:
    """Forces asynchronous TensorFlow work to complete."""
    if result is None:
        return
    if isinstance(result, Mapping):
        result = list(result.values())
    tf.nest.map_structure(lambda t: np.asarray(t) if tf.is_tensor(t) else t, result)


def timing_summary(times: Mapping[str, list[float]], reference: str) -> dict[str, dict]:
    """Per variant: median (s), interquartile range (s), calls, and median / reference median."""
    if reference not in times:
        raise ValueError(f"reference {reference!r} is not among the variants {sorted(times)}")
    ref = statistics.median(times[reference])
    out = {}
    for name, values in times.items():
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        median = statistics.median(values)
        out[name] = {
            "median_s": median,
            "iqr_s": q3 - q1,
            "calls": len(values),
            "ratio": median / ref,
        }
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are converted with str()."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_text(path: str, text: str) -> str:
    """Writes ``text`` atomically (uniq_tf.atomic), creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, text)
    return path


def write_json(path: str, obj) -> str:
    """Writes ``obj`` as JSON atomically (numpy values as numbers), creating the folder."""
    return write_text(path, json.dumps(obj, indent=2, default=atomic.json_default) + "\n")


def section_markers(name: str) -> tuple[str, str]:
    """The comments that delimit a benchmark's section of docs/benchmarks.md."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def splice_section(page: str, name: str, text: str) -> str:
    """``page`` with section ``name`` replaced by ``text`` (which carries its markers), or
    inserted right before ``## Findings`` (at the end if there is none)."""
    start, end = section_markers(name)
    if start in page and end in page:
        head, rest = page.split(start, 1)
        return head + text.rstrip("\n") + rest.split(end, 1)[1]
    anchor = "\n## Findings"
    if anchor in page:
        head, rest = page.split(anchor, 1)
        return head.rstrip("\n") + "\n\n" + text + anchor + rest
    return page.rstrip("\n") + "\n\n" + text


def section_of(page: str, name: str) -> str | None:
    """Section ``name`` of ``page`` with its markers, or None."""
    start, end = section_markers(name)
    if start not in page or end not in page:
        return None
    return start + page.split(start, 1)[1].split(end, 1)[0] + end + "\n"


def si(value: float, unit: str = "") -> str:
    """1.23e9 -> '1.23 G' (engineering prefixes, 3 significant digits)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def count_traces(model) -> list:
    """A one-element list counting ``model``'s train-step traces (the Python of train_step runs
    only while tracing); the tests of the schedule read it too."""
    counter = [0]
    step = model.train_step

    def counting_train_step(data):
        counter[0] += 1
        return step(data)

    model.train_step = counting_train_step
    return counter
