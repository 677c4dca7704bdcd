"""bench/lowbit.py: its protocol (folds, shifts, paired intervals, the docs splice) and its
quick mode, run twice, giving identical numbers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench import lowbit_data, lowbit_report

ROOT = Path(__file__).resolve().parents[1]


def test_every_digit_is_tested_exactly_once_over_five_consecutive_seeds():
    tested = []
    for seed in range(lowbit_data.FOLDS):
        x, y, xt, yt = lowbit_data.folds(seed)
        assert len(x) + len(xt) == 1797
        # No test image among the training images of its seed.
        train_rows = {row.tobytes() for row in x}
        assert sum(row.tobytes() in train_rows for row in xt) <= 2  # digits has exact duplicates
        tested.append(xt)
    all_tested = np.concatenate(tested)
    assert len(all_tested) == 1797
    # Seed s + 5 repeats the folds of seed s (with its own float model and data order).
    np.testing.assert_array_equal(lowbit_data.folds(7)[3], lowbit_data.folds(2)[3])
    x_val, _, xv, _ = lowbit_data.folds(0, validation=True)
    x_train = {row.tobytes() for row in lowbit_data.folds(0)[0]}
    assert all(row.tobytes() in x_train for row in np.concatenate([x_val, xv]))


def test_shifted_test_set_has_nine_shifts_and_a_resolution_below_005_points():
    _, _, xt, _ = lowbit_data.folds(0)
    shifted = lowbit_data.shifted(xt)
    assert shifted.shape == (9 * len(xt),) + xt.shape[1:]
    centre = lowbit_data.SHIFTS.index((0, 0))
    np.testing.assert_array_equal(shifted[centre * len(xt):(centre + 1) * len(xt)], xt)
    right = lowbit_data.SHIFTS.index((0, 1))
    np.testing.assert_array_equal(shifted[right * len(xt), :, :-1], xt[0, :, 1:])
    assert 100 / len(shifted) < 0.05


def test_paired_difference_and_interval_match_a_paired_t_test():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.8, 0.9, 5), rng.uniform(0.8, 0.9, 5)
    runs = [{"method": "x", "seed": s, "accuracy": a[s]} for s in range(5)]
    runs += [{"method": "y", "seed": s, "accuracy": b[s]} for s in range(5)]
    mean, half, n = lowbit_report.paired(runs, "x", "y")
    d = 100 * (a - b)
    assert n == 5 and mean == pytest.approx(d.mean())
    interval = stats.ttest_rel(100 * a, 100 * b).confidence_interval(0.95)
    assert (mean - half, mean + half) == pytest.approx((interval.low, interval.high))


def test_splice_replaces_the_section_and_keeps_the_rest():
    page = "# Benchmarks\n\n## 3. Deploy\n\nx\n\n## Findings\n\ny\n"
    start, end = lowbit_report.SECTION_START, lowbit_report.SECTION_END
    first = lowbit_report.splice(page, f"{start}\nOLD\n{end}\n")
    assert first.index("OLD") < first.index("## Findings") and "x" in first and "y" in first
    second = lowbit_report.splice(first, f"{start}\nNEW\n{end}\n")
    assert "OLD" not in second and second.count(start) == 1
    assert second.replace("NEW", "OLD") == first


def _quick(output_dir: Path, *flags: str, methods="uniq,kquantile_ste,ptq_kquantile"):
    process = subprocess.run(
        [sys.executable, "-m", "bench.lowbit", "--quick", f"--methods={methods}",
         f"--output_dir={output_dir}", *flags],
        check=True, cwd=ROOT, timeout=600, capture_output=True, text=True,
    )
    return json.loads((output_dir / "lowbit.json").read_text()), process.stdout


@pytest.mark.slow
def test_quick_mode_runs_twice_to_identical_numbers(tmp_path):
    (first, _), (second, _) = _quick(tmp_path / "a"), _quick(tmp_path / "b")
    key = ("model", "schedule", "method", "weight_bits", "activation_bits", "seed")
    numbers = [{tuple(r[k] for k in key): (r["accuracy"], r["cross_entropy"])
                for r in result["runs"]} for result in (first, second)]
    assert len(numbers[0]) == 3 * 2  # 3 methods x 2 seeds at W2A8
    assert numbers[0] == numbers[1]
    assert first["float"] == second["float"]
    # A UNIQ run differs from its peers (the comparison is not vacuous).
    assert len({v for v in numbers[0].values()}) == len(numbers[0])
    methods = {e["method"] for e in first["summary"]}
    assert methods == {"uniq", "kquantile_ste", "ptq_kquantile"}
    text = (tmp_path / "a" / "lowbit.md").read_text()
    assert "paired difference" in text and "| 2 | clipped |" in text
    assert (tmp_path / "a" / "lowbit_tiny_cnn_short.png").read_bytes()[:4] == b"\x89PNG"
    # A re-render keeps the numbers and can say how the run was made.
    from bench import lowbit

    again = lowbit.main(["--render_only", f"--output_dir={tmp_path / 'a'}",
                         "--note=two invocations"])
    assert again["summary"] == first["summary"]
    assert "min, two invocations;" in (tmp_path / "a" / "lowbit.md").read_text()
    # More seeds later: the earlier runs are kept (not run again), only seed 2 is made.
    more, log = _quick(tmp_path / "a", "--seeds=3", methods="uniq")
    assert "2 runs of an earlier run kept" in log
    assert "W2A8 seed 2:" in log and "W2A8 seed 0:" not in log
    extended = {r["seed"]: (r["accuracy"], r["cross_entropy"]) for r in more["runs"]}
    assert sorted(extended) == [0, 1, 2]
    assert all(extended[s] == numbers[0][("tiny_cnn", "short", "uniq", 2, 8, s)] for s in (0, 1))


def test_a_full_run_keeps_the_hand_run_sections_of_the_page_it_replaces(tmp_path):
    from bench import common, run_all

    block = "<!-- fpga:start -->\n## FPGA\nLUT 4,514\n<!-- fpga:end -->\n"
    old = tmp_path / "benchmarks.md"
    old.write_text("# Benchmarks\n\n" + block + "\n## Findings\nold\n")
    new = "# Benchmarks\n\n## 1. Accuracy\nnew\n\n## Findings\nnew findings\n"
    carried = run_all._carry_hand_run_sections(str(old), new)
    assert common.section_of(carried, "fpga") == block
    assert carried.index("## 1. Accuracy") < carried.index("LUT 4,514") < carried.index(
        "## Findings\nnew findings")
    assert common.section_of(carried, "allocation") is None
    assert run_all._carry_hand_run_sections(str(tmp_path / "none.md"), new) == new
