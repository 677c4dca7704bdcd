"""uniq_tf.allocate_bits: plans within the budget, the MILP equal to brute force, the cost
model equal to uniq_tf.summary, measured sensitivities, clear errors."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uniq_tf
from uniq_tf import allocate
from uniq_tf._keras import keras, tf

L = keras.layers
WEIGHT_BITS = (2, 4, 8)
ACTIVATION_BITS = (4, 8)


def residual_model() -> keras.Model:
    """conv1-relu1-conv2-relu2, Add(relu1, relu2), pooling, fc: fc multiplies the wider of
    conv1's and conv2's activations, conv2 multiplies conv1's."""
    inputs = keras.Input((8, 8, 1))
    r1 = L.ReLU(name="relu1")(L.Conv2D(4, 3, padding="same", name="conv1")(inputs))
    r2 = L.ReLU(name="relu2")(L.Conv2D(4, 3, padding="same", name="conv2")(r1))
    pooled = L.GlobalAveragePooling2D(name="pool")(L.Add(name="add")([r1, r2]))
    return keras.Model(inputs, L.Dense(10, name="fc")(pooled), name="residual")


CANDIDATES = {
    "conv1": [(w, a) for w in WEIGHT_BITS for a in ACTIVATION_BITS],
    "conv2": [(w, a) for w in WEIGHT_BITS for a in ACTIVATION_BITS],
    "fc": [(w, None) for w in WEIGHT_BITS],  # owns no activation quantizer
}


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(1)
    model = residual_model()
    x = np.random.RandomState(0).rand(128, 8, 8, 1).astype("float32")
    costs = allocate.cost_model(model, CANDIDATES, {})
    sensitivity, _, _ = allocate.measure_sensitivity(model, x, CANDIDATES, batches=2)
    return model, x, costs, sensitivity


def plans():
    for choice in itertools.product(*CANDIDATES.values()):
        yield dict(zip(CANDIDATES, choice, strict=True))


def summary_costs(model, plan) -> tuple[float, float]:
    report = uniq_tf.summary(model, 8, 8, layer_bits=plan)
    return report.total_bops, report.total_weight_memory_bits


def test_candidates_follow_activation_ownership(setup):
    model, *_ = setup
    candidates, fixed = allocate._candidates(model, WEIGHT_BITS, ACTIVATION_BITS, {}, set())
    assert candidates == CANDIDATES
    assert fixed == {}


def test_cost_model_equals_summary_on_every_plan(setup):
    model, _, costs, _ = setup
    assert costs.rows[2].sources == ("conv1", "conv2")  # fc: the Add takes the wider input
    for plan in plans():
        bops, memory = costs.totals(plan)
        assert (bops, memory) == summary_costs(model, plan)  # to the last bit


def test_sensitivity_is_measured_and_grows_as_bits_shrink(setup):
    *_, sensitivity = setup
    for name, pairs in CANDIDATES.items():
        assert set(sensitivity[name]) == set(pairs)
        assert all(s >= 0 for s in sensitivity[name].values())  # a KL divergence
        widest = max(pairs, key=lambda p: (p[0], p[1] or 0))
        narrowest = min(pairs, key=lambda p: (p[0], p[1] or 0))
        assert sensitivity[name][narrowest] > 10 * sensitivity[name][widest]


def brute_force(model, sensitivity, max_bops=None, max_bits=None):
    best = None
    for plan in plans():
        bops, memory = summary_costs(model, plan)
        if (max_bops is not None and bops > max_bops) or (max_bits is not None
                                                          and memory > max_bits):
            continue
        value = sum(sensitivity[n][p] for n, p in plan.items())
        if best is None or value < best[0]:
            best = (value, plan)
    return best


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.6, 0.9])
@pytest.mark.parametrize("kind", ["measured", "random"])
def test_milp_equals_brute_force(setup, fraction, kind):
    model, _, costs, sensitivity = setup
    if kind == "random":
        rng = np.random.default_rng(int(fraction * 10))
        sensitivity = {n: {p: float(rng.random()) for p in pairs}
                       for n, pairs in CANDIDATES.items()}
    low, _ = costs.totals(costs.cheapest())
    high = max(costs.totals(plan)[0] for plan in plans())
    max_bops = low + fraction * (high - low)
    plan = allocate.solve(costs, sensitivity, max_bops)
    value = sum(sensitivity[n][p] for n, p in plan.items())
    expected, _ = brute_force(model, sensitivity, max_bops)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert summary_costs(model, plan)[0] <= max_bops


def test_milp_equals_brute_force_with_a_memory_budget(setup):
    model, _, costs, sensitivity = setup
    memories = sorted({summary_costs(model, plan)[1] for plan in plans()})
    max_bits = memories[len(memories) // 3]
    plan = allocate.solve(costs, sensitivity, max_weight_bits=max_bits)
    expected, _ = brute_force(model, sensitivity, max_bits=max_bits)
    assert sum(sensitivity[n][p] for n, p in plan.items()) == pytest.approx(expected, rel=1e-9)
    assert summary_costs(model, plan)[1] <= max_bits


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bops_fraction=st.floats(0, 1.2), memory_fraction=st.one_of(st.none(), st.floats(0, 1.2)))
def test_plan_never_exceeds_the_budget(setup, bops_fraction, memory_fraction):
    model, _, costs, sensitivity = setup
    cheapest = costs.totals(costs.cheapest())
    widest = costs.totals({n: pairs[-1] for n, pairs in CANDIDATES.items()})
    max_bops = cheapest[0] + bops_fraction * (widest[0] - cheapest[0])
    max_bits = (None if memory_fraction is None
                else cheapest[1] + memory_fraction * (widest[1] - cheapest[1]))
    plan = allocate.solve(costs, sensitivity, max_bops, max_bits)
    bops, memory = summary_costs(model, plan)
    assert bops <= max_bops
    assert max_bits is None or memory <= max_bits
    assert all(plan[n] in pairs for n, pairs in CANDIDATES.items())


def test_allocate_bits_end_to_end(setup):
    model, x, costs, _ = setup
    budget = uniq_tf.summary(model, 2, 8).total_bops
    plan, report = uniq_tf.allocate_bits(model, x, max_bops=budget, weight_bits=WEIGHT_BITS,
                                         activation_bits=ACTIVATION_BITS, batches=2)
    assert set(plan) == set(CANDIDATES) and plan["fc"][1] is None
    priced = uniq_tf.summary(model, 8, 8, layer_bits=plan)
    assert priced.total_bops <= budget
    assert report.total_bops == pytest.approx(priced.total_bops, rel=1e-12)
    assert [row["bops"] for row in report.layers] == pytest.approx(
        [row["bops"] for row in priced.layers if row["weight_bits"]], rel=1e-12)
    # 2 batches x (reference + 2 calibrations + 15 pairs)
    assert report.forward_passes == 2 * (1 + 2 + 15)
    assert "of a budget of" in report.table()
    qmodel = uniq_tf.quantize_model(model, layer_bits=plan)
    assert uniq_tf.summary(qmodel).total_bops == pytest.approx(priced.total_bops, rel=1e-12)


def test_a_budget_at_the_smallest_plan_gives_it(setup):
    model, x, costs, _ = setup
    low, _ = costs.totals(costs.cheapest())
    plan, report = uniq_tf.allocate_bits(model, x, max_bops=low, weight_bits=WEIGHT_BITS,
                                         activation_bits=ACTIVATION_BITS, batches=1)
    assert plan == {"conv1": (2, 4), "conv2": (2, 4), "fc": (2, None)}
    assert report.total_bops == uniq_tf.summary(model, 8, 8, layer_bits=plan).total_bops == low


def test_pinned_layers_keep_their_bits(setup):
    model, x, _, _ = setup
    budget = uniq_tf.summary(model, 4, 8).total_bops
    plan, _ = uniq_tf.allocate_bits(model, x, max_bops=budget, batches=1,
                                    layer_bits={"conv1": (8, None), "fc": (8, 8)})
    assert plan["conv1"][0] == 8 and plan["fc"] == (8, None)


def test_errors_are_clear(setup):
    model, x, costs, _ = setup
    low, low_bits = costs.totals(costs.cheapest())
    with pytest.raises(ValueError, match="needs a budget"):
        uniq_tf.allocate_bits(model, x)
    with pytest.raises(ValueError, match=f"below the smallest plan's {low:.6g} BOPs"):
        uniq_tf.allocate_bits(model, x, max_bops=low * 0.99, weight_bits=WEIGHT_BITS,
                              activation_bits=ACTIVATION_BITS)
    with pytest.raises(ValueError, match=f"smallest plan's {low_bits / 8:.6g} bytes"):
        uniq_tf.allocate_bits(model, x, max_weight_bytes=low_bits / 8 - 1,
                              weight_bits=WEIGHT_BITS)
    with pytest.raises(ValueError, match=r"Unknown layer names \['nope'\]"):
        uniq_tf.allocate_bits(model, x, max_bops=1e9, skip_layers=["nope"])
    with pytest.raises(ValueError, match=r"Unknown layer names \['nope'\]"):
        uniq_tf.allocate_bits(model, x, max_bops=1e9, layer_bits={"nope": (4, 8)})
    with pytest.raises(ValueError, match="pins kernel layers only"):
        uniq_tf.allocate_bits(model, x, max_bops=1e9, layer_bits={"relu1": (None, 8)})
    with pytest.raises(ValueError, match="no batch"):
        uniq_tf.allocate_bits(model, x[:0], max_bops=1e9)
    with pytest.raises(ValueError, match="no batch"):
        uniq_tf.allocate_bits(model, tf.data.Dataset.from_tensor_slices(x).take(0),
                              max_bops=1e9)
    with pytest.raises(ValueError, match="is not compiled"):
        uniq_tf.allocate_bits(model, x, max_bops=1e9, metric="loss")
    with pytest.raises(ValueError, match=r"weight_bits must be an integer in 1..16, got 17"):
        uniq_tf.allocate_bits(model, x, max_bops=1e9, weight_bits=(2, 17))
    with pytest.raises(ValueError, match="max_bops must be a positive number"):
        uniq_tf.allocate_bits(model, x, max_bops=-1)


def test_loss_metric_uses_labels(setup):
    model, x, _, _ = setup
    model = keras.models.clone_model(model)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.arange(len(x)) % 10
    sensitivity, _, _ = allocate.measure_sensitivity(model, (x, y), {"conv1": [(2, 4), (8, 8)]},
                                                     batches=2, metric="loss")
    # The cross-entropy change of a 2-bit layer is larger than an 8-bit one's.
    assert abs(sensitivity["conv1"][(2, 4)]) > abs(sensitivity["conv1"][(8, 8)])


def test_summary_shows_the_plan_against_its_budget(setup):
    model, _, _, _ = setup
    plan = {"conv1": (8, 4), "conv2": (2, 8), "fc": (4, None)}
    report = uniq_tf.summary(model, 8, 8, layer_bits=plan, max_bops=1e12,
                             max_weight_bytes=10.0)
    rows = {row["name"]: row for row in report.layers}
    assert (rows["conv2"]["weight_bits"], rows["conv2"]["activation_bits"]) == (2, 4)
    assert (rows["fc"]["weight_bits"], rows["fc"]["activation_bits"]) == (4, 8)
    text = report.table()
    assert f"Budget of BOPs: 1e+12; the plan uses {report.total_bops:.6g}" in text
    assert "within budget" in text and "OVER budget" in text  # 10 bytes is too few
    assert "Budget" not in uniq_tf.summary(model, 8, 8, layer_bits=plan).table()


def test_tradeoff_plot_draws_the_budget_lines():
    from uniq_tf.cost.plots import tradeoff_figure

    points = [{"method": "uniform", "bops": 1e6, "accuracy": 90.0},
              {"method": "allocated", "bops": 9e5, "accuracy": 91.0}]
    figure = tradeoff_figure(points, budget=[1e6, 2e6])
    vertical = [tuple(line.get_xdata()) for line in figure.axes[0].lines
                if line.get_linestyle() == ":"]
    assert vertical == [(1e6, 1e6), (2e6, 2e6)]
    with pytest.raises(ValueError, match="budget must be a finite number of BOPs > 0"):
        tradeoff_figure(points, budget=-1)


@pytest.mark.slow
def test_training_script_trains_a_budget_end_to_end(tmp_path):
    from uniq_tf.cli import train

    config = train.TrainConfig(
        float_epochs=2, stages=2, epochs_per_stage=1, final_epochs=1, calibration_steps=2,
        max_steps_per_epoch=4, max_bops=0.025, allocation_weight_bits="2,4,8",
        allocation_batches=1, layer_bits="fc=8:", output_dir=str(tmp_path / "out"),
        verbose=0)
    summary = train.run(config)
    allocation = summary["allocation"]
    float_bops = summary["bops"]["float_bops"]
    assert allocation["max_bops"] == pytest.approx(0.025 * float_bops)
    assert summary["bops"]["quantized_bops"] <= allocation["max_bops"]
    assert summary["bops"]["quantized_bops"] == pytest.approx(allocation["total_bops"])
    plan = {row["name"]: row["weight_bits"] for row in allocation["layers"]}
    assert plan["fc"] == 8  # pinned
    trained = {name: book["bits"] for name, book in summary["codebooks"].items()}
    assert trained == plan  # the quantized model holds the plan's widths
    assert summary["layer_bits"]["conv1"][0] == plan["conv1"]
    assert "Budget of BOPs" in (tmp_path / "out" / "bops.txt").read_text()
    with pytest.raises(ValueError, match="below the smallest plan's"):  # before training
        train.prepare(dataclasses.replace(config, max_bops=0.01, output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="max_bops must be a number >= 0"):
        train.validate_config(train.TrainConfig(max_bops=-1))
    with pytest.raises(ValueError, match=r"allocation_weight_bits must be an integer in 1..16"):
        train.validate_config(train.TrainConfig(max_bops=0.1, allocation_weight_bits="2,32"))


def test_bench_pairs_by_seed_and_splices_before_the_findings():

    from scipy import stats

    from bench import allocation

    uniform, allocated = [0.90, 0.92, 0.95], [0.91, 0.95, 0.96]
    runs = [{"seed": s, "method": m, "accuracy": a}
            for m, accs in (("uniform", uniform), ("allocated", allocated))
            for s, a in enumerate(accs)]
    diff, half, n = allocation.paired(runs)
    d = 100 * (np.array(allocated) - np.array(uniform))
    low, high = stats.ttest_rel(100 * np.array(allocated), 100 * np.array(uniform)
                                ).confidence_interval()
    assert (diff, n) == (pytest.approx(d.mean()), 3)
    assert (diff - half, diff + half) == (pytest.approx(low), pytest.approx(high))
    page = "# B\n\n<!-- lowbit:start -->\nL\n<!-- lowbit:end -->\n\n## Findings\nF\n"
    text = f"{allocation.SECTION_START}\nA1\n{allocation.SECTION_END}\n"
    once = allocation.splice(page, text)
    assert once.index("<!-- lowbit:end -->") < once.index("A1") < once.index("## Findings")
    again = allocation.splice(once, text.replace("A1", "A2"))
    assert "A1" not in again and again.count("A2") == 1
    assert again.replace("A2", "A1") == once


def test_a_budget_equal_to_a_plans_cost_admits_that_plan(setup):
    model, *_ = setup
    candidates = {"conv1": [(2, 4), (4, 8)], "conv2": [(2, 4), (4, 8)],
                  "fc": [(2, None), (4, None)]}
    costs = allocate.cost_model(model, candidates, {})
    sensitivity = {n: {p: 0.0 if p[0] == 4 else 1.0 for p in pairs}
                   for n, pairs in candidates.items()}
    max_bops = uniq_tf.summary(model, 4, 8).total_bops  # the uniform W4A8 plan, exactly
    plan = allocate.solve(costs, sensitivity, max_bops)
    assert plan == {"conv1": (4, 8), "conv2": (4, 8), "fc": (4, None)}
    assert allocate.solve(costs, sensitivity, max_bops * (1 - 1e-12)) != plan


def test_plot_plan_shows_bits_and_bops_per_layer(setup, tmp_path):
    from uniq_tf.cost.plots import plan_figure

    model, *_ = setup
    plan = {"conv1": (8, 4), "conv2": (2, 8), "fc": (4, None)}
    report = uniq_tf.summary(model, 8, 8, layer_bits=plan, max_bops=1e7)
    axes = plan_figure(report).axes[0]
    heights = [bar.get_height() for bar in axes.patches]
    assert heights == pytest.approx([row["bops"] for row in report.layers if row["macs"]])
    # conv2 multiplies conv1's 4-bit activations; fc the wider of conv1's and conv2's.
    assert [t.get_text() for t in axes.texts] == ["W8A8", "W2A4", "W4A8"]
    assert "of a budget of 1e+07" in axes.get_title()
    path = uniq_tf.plot_plan(report, tmp_path / "plan.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_training_budgets_and_a_resumed_run_keeps_its_plan(tmp_path):
    from pathlib import Path

    from uniq_tf.cli import train
    from uniq_tf.training import pipeline

    assert pipeline._budget(0, 1e6) is None
    assert pipeline._budget(0.25, 1e6, unit=1000) == 2.5e5  # a fraction of the float model's
    assert pipeline._budget(40, 1e6, unit=1000) == 4e4  # 40 kB
    ws = train.Workspace(str(tmp_path), str(tmp_path), True, "chief")
    saved = {"plan": {"conv1": [2, 4]}, "report": {"max_bops": 1.0}}
    Path(ws.state("allocation.json")).parent.mkdir(parents=True)
    Path(ws.state("allocation.json")).write_text(json.dumps(saved))
    config = train.TrainConfig(max_weight_kb=40)
    # A restarted run reads the plan back: no model, no data needed.
    assert pipeline.allocate(config, ws, None, None) == saved
    assert pipeline.allocate(train.TrainConfig(), ws, None, None) is None  # no budget
