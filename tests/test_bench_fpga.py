"""bench.fpga's reporting half on synthetic runs (no FINN, no training): the fits, the
threshold count, the tables and the generated section 6 (numbers from the data, no tracker
issue named, spliced between its markers)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench.fpga import docs, fits, results, sweep, tables

MACHINE = {"cores": 2, "cpu": "Test CPU", "python": "3.11.7", "tensorflow": "2.21.0",
           "tf_keras": "2.21.0", "tfmot": "0.8.1", "date": "2026-12-01 10:00 UTC"}


def _synthetic(lut_per_mbop: float, lut_per_threshold: float, noise: float, seed: int = 0):
    """A run of both parts: small_cnn variants at one width and fps, and a sweep of two models
    at W2..4 x A4/A8 whose LUT is a BOPs + b T + d plus noise."""
    rng = np.random.default_rng(seed)
    export_rows, finn = [], {}
    for variant, lut, bram in (("default", 6000, 40), ("grid_b", 4500, 20),
                               ("uniform", 4510, 20)):
        bundle = f"bundles/small_cnn_w4_{variant}_1000fps"
        export_rows.append({
            "model": "small_cnn", "weight_bits": 4, "variant": variant, "target_fps": 1000.0,
            "bundle": bundle, "grid_bits": {"conv1": 10 if variant == "default" else 4,
                                            "fc": 10 if variant == "default" else 4},
            "keras_accuracy": 0.99, "onnx_accuracy": 0.99, "top1_agreement": 1.0,
            "max_abs_diff": 0.01})
        finn[bundle] = {"LUT": lut, "LUT_compute": lut - 1600, "BRAM_18K": bram,
                        "estimated_fps": 1017.0, "all_compute_layers_mapped": True,
                        "folding_mismatches": [], "seconds": 10.0, "finn_version": "1.6.1",
                        "date": "2026-12-01 11:00 UTC",
                        "LUT_by_kind": {"MVAU": lut - 1600, "Thresholding": 0,
                                        "ConvolutionInputGenerator": 1600}}
    sweep_runs = []
    for model, channels, scale in (("small_cnn", 160, 1.0), ("resnet20", 688, 3.0)):
        rows = []
        for a_bits in (4, 8):
            for w_bits in (2, 3, 4):
                bops = scale * 1e6 * (10 + w_bits * a_bits)
                thresholds = channels * (2**a_bits - 1)
                bundle = f"sweep/{model}_w{w_bits}a{a_bits}"
                rows.append({"model": model, "weight_bits": w_bits, "activation_bits": a_bits,
                             "bundle": bundle, "bops": bops, "bops_simple": bops / 2,
                             "macs": 1e6, "thresholds": thresholds,
                             "activation_quantizers": 3})
                lut = (lut_per_mbop * bops / 1e6 + lut_per_threshold * thresholds + 1000
                       + noise * rng.standard_normal())
                finn[bundle] = {"LUT": lut, "LUT_compute": 0.8 * lut, "BRAM_18K": 10 * w_bits,
                                "estimated_fps": 10434.0, "thresholds_finn": thresholds,
                                "all_compute_layers_mapped": True, "folding_mismatches": [],
                                "LUT_by_kind": {"Thresholding": 0.1 * lut}}
        sweep_runs.append({"machine": MACHINE, "model": model, "target_fps": 10000.0,
                           "folding": {"Defaults": {}, "MVAU_hls_0": {"PE": 2, "SIMD": 1}},
                           "seconds": 60.0, "rows": rows})
    return {
        "export": {"runs": [{"machine": MACHINE, "seconds": 100.0, "rows": export_rows,
                             "images": {"train": 987, "validation": 360, "test": 450},
                             "failed": []}]},
        "sweep": {"runs": sweep_runs, "rows": [r for run in sweep_runs for r in run["rows"]]},
        "finn": finn,
    }


def test_r_squared_is_one_on_a_line_and_numpy_s_on_known_data():
    x = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    slope, intercept, r2 = fits.r_squared(x, 3 * x - 2)
    assert (slope, intercept, r2) == pytest.approx((3, -2, 1))
    y = np.array([1.0, 3.0, 2.0, 7.0, 9.0])
    slope, intercept, r2 = fits.r_squared(x, y)
    assert (slope, intercept) == pytest.approx(tuple(np.polyfit(x, y, 1)))
    assert r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)


def test_two_variable_fit_and_a_constant_column():
    rng = np.random.default_rng(1)
    bops, t = rng.uniform(1, 9, 12), rng.uniform(0, 5, 12)
    fit = fits.least_squares({"bops": bops, "thresholds": t}, 2 * bops + 7 * t + 1)
    assert fit["coefficients"] == pytest.approx({"bops": 2, "thresholds": 7})
    assert (fit["intercept"], fit["r2"]) == pytest.approx((1, 1))
    y = bops + rng.standard_normal(12)
    constant = fits.least_squares({"bops": bops, "thresholds": np.full(12, 3.0)}, y)
    assert constant["coefficients"]["thresholds"] is None
    assert constant["r2"] == pytest.approx(fits.r_squared(bops, y)[2])


def test_fit_rows_are_the_groups_of_the_given_estimates():
    data = _synthetic(150.0, 0.5, noise=50.0)
    points = results.sweep_points(data)
    assert len(points) == 12
    rows = fits.fit_rows(points)
    groups = {(r["model"], r["activation_bits"], r["n"]) for r in rows}
    assert groups == {("small_cnn", 4, 3), ("small_cnn", 8, 3), ("small_cnn", "all", 6),
                      ("resnet20", 4, 3), ("resnet20", 8, 3), ("resnet20", "all", 6),
                      ("all", 4, 6), ("all", 8, 6), ("all", "all", 12)}
    assert len(rows) == 9 * 2 * 2  # groups x (total, MVAUs) x (BOPs; BOPs and T)
    for row in rows:  # each fit redone by hand from the synthetic estimates
        members = [p for p in points if row["model"] in ("all", p["model"])
                   and row["activation_bits"] in ("all", p["activation_bits"])]
        lut = np.array([data["finn"][p["bundle"]]["LUT" if row["lut"] == "total"
                                                  else "LUT_compute"] for p in members])
        keys = fits.PREDICTORS[row["predictor"]]
        columns = [np.array([p[k] for p in members]) for k in keys]
        columns = [c for c in columns if np.ptp(c)]
        design = np.column_stack([*columns, np.ones(len(members))])
        residual = lut - design @ np.linalg.lstsq(design, lut, rcond=None)[0]
        assert row["r2"] == pytest.approx(1 - residual @ residual / ((lut - lut.mean()) ** 2)
                                          .sum())
    # Within one model and one A, T is constant: no threshold coefficient.
    per_a = [r for r in rows if r["predictor"] == "BOPs, T" and r["model"] != "all"
             and r["activation_bits"] != "all"]
    assert all(r["coefficients"]["thresholds"] is None for r in per_a)
    exact = fits.fit_rows(results.sweep_points(_synthetic(150.0, 0.5, noise=0.0)))
    both = next(r for r in exact if r["model"] == "all" and r["activation_bits"] == "all"
                and r["lut"] == "total" and r["predictor"] == "BOPs, T")
    assert both["coefficients"]["bops"] == pytest.approx(150e-6)
    assert both["coefficients"]["thresholds"] == pytest.approx(0.5)
    assert both["r2"] == pytest.approx(1.0)


def test_threshold_count_of_a_tiny_model_is_channels_times_levels():
    import uniq_tf
    from uniq_tf._keras import keras

    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(5, 3, name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    outputs = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x))
    model = uniq_tf.quantize_model(keras.Model(inputs, outputs), weight_bits=4,
                                   activation_bits=3)
    found = sweep.activation_thresholds(model)
    assert sorted((c, b) for _, c, b in found) == [(3, 3), (5, 3)]
    assert sweep.threshold_count(found) == 3 * 7 + 5 * 7
    with_input = sweep.activation_thresholds(model, input_bits=5)
    assert with_input[0] == ("input", 1, 5)
    assert sweep.threshold_count(with_input) == 1 * 31 + 3 * 7 + 5 * 7
    assert sweep.threshold_count([("a", 16, 8), ("b", 32, 4)]) == 16 * 255 + 32 * 15


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d,]*\.?\d*", text)


def test_generated_section_takes_its_numbers_from_the_data():
    first = _synthetic(150.0, 0.5, noise=50.0)
    second = _synthetic(90.0, 2.0, noise=300.0, seed=3)
    texts = [docs.wrap(docs.section_text(d, figure="img/x.png")) for d in (first, second)]
    for text, data in zip(texts, (first, second), strict=True):
        assert "issue" not in text.lower()
        fit_part = text.split(docs.FIT_CAPTION[:40])[1].split("![")[0]
        for row in fits.fit_rows(results.sweep_points(data)):
            assert f"| {row['r2']:.3f} |" in fit_part
            assert f"| {row['intercept']:,.0f} |" in fit_part
            assert f"| {tables.slopes(row)} |" in fit_part
        prose = " ".join(text.split())
        assert "one test image is 0.22 points" in prose
        assert "Exports of `small_cnn` at W4A8: ended 2026-12-01 10:00 UTC after 100 s" in prose
        assert "Sweep of `resnet20`: ended 2026-12-01 10:00 UTC after 60 s" in prose
        assert "![FINN LUT against BOPs](img/x.png)" in text
        assert "| small_cnn | 4 | grid_b | 4 | +0.00 | 0.75x, 0.66x, 0.50x |" in text
        assert "| small_cnn | 4 | 1,000 | -10 | +0 | 99.00 % | 99.00 % |" in text
    # Everything outside the captions that state settings changes with the data.
    sweep_parts = [t.split("**BOPs against logic.**")[1] for t in texts]
    assert _numbers(sweep_parts[0]) != _numbers(sweep_parts[1])
    assert texts[0].split("**BOPs against logic.**")[0] == \
        texts[1].split("**BOPs against logic.**")[0]


def test_sweep_table_rows_come_from_the_estimates():
    data = _synthetic(150.0, 0.5, noise=0.0)
    lines = tables.sweep_table(data).splitlines()[2:]
    assert len(lines) == 12
    row = next(r for r in data["sweep"]["rows"]
               if (r["model"], r["weight_bits"], r["activation_bits"]) == ("resnet20", 3, 8))
    lut = data["finn"][row["bundle"]]["LUT"]
    expected = (f"| resnet20 | 3 | 8 | {row['bops'] / 1e6:,.2f} M | "
                f"{row['bops_simple'] / 1e6:,.2f} M | {688 * 255:,} | {688 * 255:,} | "
                f"{lut:,.0f} | {0.8 * lut:,.0f} | {0.1 * lut:,.0f} | 30 | 10,434 |")
    assert expected in lines


def test_docs_splice_replaces_only_section_6(tmp_path, monkeypatch):
    data = _synthetic(150.0, 0.5, noise=50.0)
    monkeypatch.setattr(docs, "load", lambda output_dir: data)
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n<!-- fpga:start -->\n## 6. old\nstale hand-written words\n"
                    "<!-- fpga:end -->\n\n## Findings\n\nhand-written\n")
    docs.write_docs(tmp_path, page, "img/p.png")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\n<!-- fpga:start -->\n## 6. FPGA resources")
    assert text.endswith("<!-- fpga:end -->\n\n## Findings\n\nhand-written\n")
    assert "stale hand-written words" not in text and "## 6. old" not in text
    docs.write_docs(tmp_path, page, "img/p.png")  # idempotent
    assert page.read_text() == text
    (tmp_path / "none.md").write_text("no section\n")
    with pytest.raises(SystemExit, match="no fpga section"):
        docs.write_docs(tmp_path, tmp_path / "none.md")
