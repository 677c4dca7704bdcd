"""The benchmark scripts work: bench/run_all.py --quick (make bench-quick, the quick mode CI
runs) end to end (into tmp_path, never docs/), plus the peers and the timing helpers they rely
on."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import uniq_tf
from bench import accuracy, common, lowbit_report, peers, report, train_speed
from uniq_tf._keras import keras

ROOT = Path(__file__).resolve().parents[1]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.mark.slow
def test_run_all_quick_writes_well_formed_results(tmp_path):
    docs = ROOT / "docs" / "benchmarks.md"
    before = _digest(docs)
    subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick",
         f"--output_dir={tmp_path}"],
        check=True, cwd=ROOT, timeout=840,
    )
    assert _digest(docs) == before, "a quick run must not rewrite docs/benchmarks.md"

    acc = json.loads((tmp_path / "accuracy.json").read_text())
    methods = acc["config"]["methods"]
    assert set(methods) == set(accuracy.DEFAULT_METHODS)
    config = accuracy.quick_config()
    (pairs,) = config.bits.values()
    (seeds,) = config.seeds.values()
    assert len(acc["runs"]) == len(methods) * len(pairs) * len(seeds)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in acc["runs"])
    assert {r["method"] for r in acc["runs"]} == set(methods)
    fine_tuned = [r for r in acc["runs"] if r["method"] in accuracy.FINE_TUNED]
    assert {r["epochs"] for r in fine_tuned} == {acc["epochs"]["small_cnn"]}
    bops = acc["bops"]["small_cnn"]
    assert 0 < bops["W2A8"] < bops["W4A8"] < bops["float"]
    assert {e["method"] for e in acc["summary"]} == set(methods) | {"float"}

    speed = json.loads((tmp_path / "train_speed.json").read_text())
    assert speed["summary"]["float"]["ratio"] == pytest.approx(1.0)
    speed_config = train_speed.quick_config()
    assert set(speed["summary"]) == set(speed_config.variants)
    for entry in speed["summary"].values():
        assert entry["median_s"] > 0
        assert entry["calls"] == speed_config.rounds * speed_config.calls_per_round

    deploy = json.loads((tmp_path / "deploy.json").read_text())
    (model,) = deploy["models"]
    sizes = model["sizes"]
    assert 0 < sizes["TFLite int8"]["raw"] < sizes["TFLite float"]["raw"]
    assert model["b_over_32"] == 4 / 32
    assert model["packed_file_ratio"] == pytest.approx(
        model["packed_file_bytes"] / (4 / 32 * sizes["float32 weights"]["raw"]))
    assert sizes["packed"]["raw"] == model["packed_file_bytes"]
    assert model["latency"]["int8"]["median_s"] > 0

    run = json.loads((tmp_path / "run.json").read_text())
    assert run["mode"] == "quick" and run["machine"]["cores"] >= 1
    page = (tmp_path / "benchmarks.md").read_text()
    for heading in ("## Targets", "## 1. Accuracy", "## 2. Training cost", "## 3. Deployment"):
        assert heading in page
    assert run["machine"]["tensorflow"] in page and "img/accuracy_bops_small_cnn.png" in page
    for png in (tmp_path / "accuracy_bops_small_cnn.png",
                tmp_path / "img" / "accuracy_bops_small_cnn.png"):
        assert png.read_bytes()[:8] == PNG_SIGNATURE


def _tiny_float_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="fc")(x)
    model = keras.Model(inputs, outputs)
    return model


@pytest.mark.parametrize("bits,narrow", [(2, True), (2, False), (3, True), (3, False)])
def test_uniform_peer_levels_per_channel(bits, narrow):
    float_model = _tiny_float_model()
    model = peers.uniform_qat(float_model, bits, 8, narrow_range=narrow)
    peers.set_uniform_ranges(model)
    levels = peers.distinct_kernel_values(model)
    assert set(levels) == {"conv", "fc"}
    # Integers -(2^(b-1) - 1) .. 2^(b-1) - 1 (narrow) or -2^(b-1) .. 2^(b-1) - 1 (full range)
    # times a per-channel scale; the widest channel of a 2-bit ternary kernel uses all three.
    limit = 2**bits - 1 if narrow else 2**bits
    assert all(2 < n <= limit for n in levels.values()), levels
    # The float model is left untouched.
    assert float_model.get_layer("conv").kernel is not model.get_layer("conv").layer.kernel


def test_clustering_peer_has_2b_levels_and_quantized_activations():
    model = peers.clustered(_tiny_float_model(), 2, 4, "kmeans++")
    assert peers.distinct_kernel_values(model) == {"conv": 4, "fc": 4}
    relu = model.get_layer("relu")
    assert relu.quantize_config.activation_bits == 4
    x = np.random.default_rng(0).random((2, 6, 6, 2)).astype("float32")
    assert model(x).shape == (2, 4)


def test_interleaved_times_runs_every_variant_in_rounds():
    calls = []
    variants = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    times = common.interleaved_times(variants, rounds=4, calls_per_round=3, warmup_calls=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 12, "b": 12, "c": 12}
    timed = calls[3:]  # after one warm-up call each
    # Each round is one contiguous block of 3 calls per variant, every variant once per round.
    for start in range(0, len(timed), 9):
        block = timed[start:start + 9]
        assert sorted(block) == sorted(["a"] * 3 + ["b"] * 3 + ["c"] * 3)
        assert all(block[i] == block[i - i % 3] for i in range(9))
    summary = common.timing_summary({"f": [1.0, 2.0, 3.0], "g": [4.0, 4.0, 4.0]}, "f")
    assert summary["g"]["ratio"] == pytest.approx(2.0)
    assert summary["f"]["median_s"] == 2.0


def _runs(method, bits, accuracies):
    return [{"model": "m", "method": method, "weight_bits": bits[0], "activation_bits": bits[1],
             "seed": seed, "accuracy": a / 100} for seed, a in enumerate(accuracies)]


def test_accuracy_targets_are_paired_over_the_seeds():
    results = {
        "config": {"models": ["m"]},
        "float": [{"model": "m", "seed": s, "accuracy": a / 100}
                  for s, a in enumerate((99.0, 98.0, 99.4))],
        "runs": _runs("uniq", (4, 8), (98.6, 97.7, 99.0))  # 0.37 below float: met
        # W2A8: the peer is 0.5 above UNIQ on every seed, an interval of width 0: ▲, missed.
        + _runs("uniq", (2, 8), (97.0, 96.0, 95.0))
        + _runs("uniform_qat", (2, 8), (97.5, 96.5, 95.5))
        # W3A8: the peer's mean is higher, but its interval holds 0: no ▲, met.
        + _runs("uniq", (3, 8), (97.0, 96.0, 95.0))
        + _runs("cluster_kmeans", (3, 8), (99.0, 95.0, 95.3))
        # UNIQ's own ablation is no peer, however far above.
        + _runs("uniq_flat", (3, 8), (99.9, 99.9, 99.9)),
    }
    found = {t["target"]: (t["met"], t["measured"]) for t in accuracy.targets(results)}
    assert found["UNIQ W4A8 at most 0.5 points below float"] == (
        True, "UNIQ minus float -0.37 ± 0.14")
    assert found["W2A8: no peer's paired 95 % interval above UNIQ (no ▲)"][0] is False
    met, measured = found["W3A8: no peer's paired 95 % interval above UNIQ (no ▲)"]
    assert met is True
    assert measured == "best peer TFMOT clustering, k-means++ init minus UNIQ: +0.43 ± 3.74 points"


def test_lowbit_targets_count_lsq_and_the_interval_width():
    def entry(method, diff, half, bits=(2, 8), n=40):
        return {"model": "m", "schedule": "short", "method": method, "weight_bits": bits[0],
                "activation_bits": bits[1], "diff_to_uniq": diff, "ci_half": half, "n": n}

    results = {"models": ["m"], "summary": [
        entry("uniq", 0.0, 0.0), entry("kquantile_ste", -1.0, 1.5), entry("lsq", 2.5, 2.1),
        entry("uniq_final4", 9.0, 0.1),  # UNIQ's own variant: no peer
        entry("lsq", 0.3, 0.4, bits=(3, 8), n=10)]}
    found = {t["target"]: (t["met"], t["measured"]) for t in lowbit_report.targets(results)}
    met, measured = found["W2A8: no peer's paired 95 % interval above UNIQ (no ▲)"]
    assert met is False and "LSQ" in measured and "+2.50 ± 2.10" in measured
    met, measured = found["W2A8: every paired 95 % interval (UNIQ against a peer) at most ± 2 "
                          "points"]
    assert met is False and "± 2.10" in measured and "40 seeds" in measured
    assert found["W3A8: no peer's paired 95 % interval above UNIQ (no ▲)"][0] is True


def test_the_packed_target_counts_the_files_bytes():
    entry = {"model": "m", "name": "m", "int8_over_float_tflite": 0.26,
             "packed_file_ratio": 1.3, "packed_file_bytes": 1300, "b_over_32": 0.125}
    rows = report.target_rows({"deploy": {"models": [], "size_only": [entry]}})
    packed = [r for r in rows if r[1].startswith("packed file")]
    assert len(packed) == 1 and packed[0][3] == "**no**" and "1,300 bytes" in packed[0][2]
    rows = report.target_rows({"deploy": {"models": [], "size_only": [
        dict(entry, packed_file_ratio=1.1)]}})
    assert [r[3] for r in rows if r[1].startswith("packed file")] == ["yes"]


def test_uniform_ranges_are_set_before_activations_are_calibrated():
    # Until its range is set, TFMOT's LastValueQuantizer quantizes to [-6, 6] at inference,
    # which zeroes small kernels: calibrating activations through it would give tiny ranges.
    float_model = _tiny_float_model()
    x = np.random.default_rng(0).random((64, 6, 6, 2)).astype("float32")
    relu_out = keras.Model(float_model.input, float_model.get_layer("relu").output)
    float_max = float(relu_out(x).numpy().max())
    model = accuracy.build("ptq_uniform", float_model, 4, 8, accuracy.AccuracyConfig())
    accuracy._prepare("ptq_uniform", model, [x], accuracy.AccuracyConfig())
    low, high = uniq_tf.get_activation_ranges(model)["relu"][:2]
    assert low == 0.0 and high == pytest.approx(float_max, rel=0.2)


def test_the_stage_change_section_is_tabled_from_the_runs():
    from bench import stage_change

    def result(change, memory, **extra):
        return {"model": "resnet20", "input_shape": [32, 32, 3], "batch_size": 32, "stages": 20,
                "epochs": 42, "traces": 1, "stage_change_over_other": change,
                "rss_last_over_first_stage": memory, "fit_seconds": 15.0, **extra}

    good = stage_change.section([result(1.02, 1.03), result(9.0, 3.0, no_schedule=True)],
                                ["run a", "run b"])
    assert "**met** (at most 1.02x)" in good and "**met** (at most 1.03x)" in good
    assert "control: no schedule" in good and "`run a`; `run b`" in good
    bad = stage_change.section([result(2.5, 1.2)], ["run a"])
    assert bad.count("**not met**") == 2 and "2.50x" in bad and "1.20x" in bad


def test_lowbit_seed_counts_are_read_from_the_runs():
    runs = [{"schedule": "short", "weight_bits": w, "activation_bits": 8, "method": m,
             "model": "tiny_cnn", "seed": s}
            for m, w, n in (("uniq", 2, 40), ("uniq", 3, 10), ("lsq", 2, 40), ("uniq_paper", 2, 10))
            for s in range(n)]
    runs += [{"schedule": "reference", "weight_bits": 2, "activation_bits": 8, "method": "uniq",
              "model": "tiny_cnn", "seed": s} for s in range(10)]
    text = lowbit_report.seed_counts_text({"runs": runs, "schedules": ["short", "reference"],
                                "methods": ["uniq", "uniq_paper", "lsq"]})
    assert text == ("short schedule: 10 seeds (40 at W2A8 for uniq, lsq); "
                    "reference schedule: 10 seeds")
