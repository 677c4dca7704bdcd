"""allocate_bits on models that are not classifiers: a regression MLP and a two-head model
(softmax and regression) get a sensitivity that means something for each output, a plan that
spends the budget, and the measure named in the report; unbatched data and a loss metric
without labels are handled."""

import numpy as np
import pytest

import uniq_tf
from uniq_tf._keras import keras, tf
from uniq_tf.cost import allocate, sensitivity

L = keras.layers
WEIGHT_BITS = (2, 4, 8)
ACTIVATION_BITS = (4, 8)


def _regression_data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    y = (np.sin(x[:, :4]).sum(1) + 0.5 * x[:, 4] * x[:, 5]).astype(np.float32)[:, None]
    return x, y


def regression_mlp():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    h = L.Dense(48, activation="relu", name="d1")(inputs)
    h = L.Dense(48, activation="relu", name="d2")(h)
    model = keras.Model(inputs, L.Dense(1, name="out")(h), name="regression")
    x, y = _regression_data()
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    model.fit(x, y, batch_size=64, epochs=30, verbose=0)
    return model


def two_heads():
    """A softmax head (which quarter of the target) and a regression head (the target)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    h = L.Dense(48, activation="relu", name="shared")(inputs)
    h = L.Dense(48, activation="relu", name="trunk")(h)
    probs = L.Dense(4, activation="softmax", name="cls")(h)
    value = L.Dense(1, name="reg")(L.Dense(16, activation="relu", name="reg_hidden")(h))
    model = keras.Model(inputs, [probs, value], name="two_heads")
    x, y = _regression_data()
    classes = np.digitize(y[:, 0], np.quantile(y[:, 0], [0.25, 0.5, 0.75]))
    model.compile(keras.optimizers.Adam(3e-3), ["sparse_categorical_crossentropy", "mse"])
    model.fit(x, [classes, y], batch_size=64, epochs=30, verbose=0)
    return model


def hard_quantized(model, plan, x):
    """``model`` quantized by ``plan`` with every quantizer on, calibrated on ``x``."""
    q = uniq_tf.quantize_model(model, layer_bits=plan)
    uniq_tf.calibrate_activations(q, x, verbose=False)
    uniq_tf.set_weight_mode(q, uniq_tf.Mode.QUANTIZED)
    return q


def output_error(model, quantized, x) -> float:
    """The allocation's own measure (summed over outputs), on held-out inputs."""
    reference = sensitivity._outputs(model(x, training=False))
    scorer = sensitivity._Scorer(model, reference, allocate.output_measures(model), None)
    return scorer(sensitivity._outputs(quantized(x, training=False)))


@pytest.mark.parametrize("build", [regression_mlp, two_heads], ids=["regression", "two-heads"])
def test_the_plan_spends_the_budget_and_beats_the_uniform_plan_of_equal_cost(build):
    model = build()
    x, _ = _regression_data(seed=1)
    uniform = uniq_tf.summary(model, 4, 8)
    budget = uniform.total_bops
    plan, report = uniq_tf.allocate_bits(model, x, max_bops=budget, weight_bits=WEIGHT_BITS,
                                         activation_bits=ACTIVATION_BITS)
    costs = allocate.check_budget(model, max_bops=budget, weight_bits=WEIGHT_BITS,
                                  activation_bits=ACTIVATION_BITS)
    cheapest = costs.cheapest()
    assert {k: tuple(v) for k, v in plan.items() if k in cheapest} != cheapest
    assert report.total_bops <= budget
    sensitivities = [s for row in report.layers for s in row["candidates"].values()]
    assert max(sensitivities) > 0  # not the constant 0 of a softmax over one output
    held_out, _ = _regression_data(seed=2)
    uniform_plan = {name: (4, None if a is None else 8) for name, (_, a) in plan.items()}
    allocated = output_error(model, hard_quantized(model, plan, x), held_out)
    baseline = output_error(model, hard_quantized(model, uniform_plan, x), held_out)
    assert allocated <= baseline
    measures = {m["output"]: m["measure"] for m in report.measures}
    expected = {"out": "mse"} if build is regression_mlp else {"cls": "kl_probs", "reg": "mse"}
    assert measures == expected
    assert "mean squared output error over the float outputs' variance" in report.table()


def test_measures_follow_the_compiled_loss_then_the_activation():
    inputs = keras.Input((4,))
    logits = keras.Model(inputs, L.Dense(5)(inputs))
    assert allocate.output_measures(logits)[0][1] == "kl"  # several linear units: logits
    logits.compile(loss="mse")
    assert allocate.output_measures(logits)[0][1] == "mse"  # the compiled loss says regression
    logits.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert allocate.output_measures(logits)[0][1] == "kl"
    sigmoid = keras.Model(inputs, L.Dense(3, activation="sigmoid")(inputs))
    assert allocate.output_measures(sigmoid)[0][1] == "mse"  # multi-label
    with pytest.raises(ValueError, match="metric must be one of"):
        allocate.output_measures(sigmoid, "l1")


def test_the_loss_metric_needs_a_compiled_loss_and_labels():
    model = regression_mlp()
    x, y = _regression_data(seed=1)
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    with pytest.raises(ValueError, match='metric="loss" .* is not compiled'):
        uniq_tf.allocate_bits(plain, (x, y), max_bops=1e12, metric="loss")
    with pytest.raises(ValueError, match='metric="loss" needs .inputs, labels. batches'):
        uniq_tf.allocate_bits(model, x, max_bops=1e12, metric="loss")
    _, report = uniq_tf.allocate_bits(model, (x, y), max_bops=1e12, metric="loss",
                                      weight_bits=(2, 8), activation_bits=(8,))
    narrow, wide = report.layers[0]["candidates"]["W2A8"], report.layers[0]["candidates"]["W8A8"]
    assert narrow > wide  # the compiled MSE grows as the bits shrink
    assert report.measures[0]["measure"] == "loss"


def test_an_unbatched_dataset_is_batched_by_the_models_input_rank():
    model = regression_mlp()
    x, _ = _regression_data(seed=1)
    batched, _ = uniq_tf.allocate_bits(model, tf.data.Dataset.from_tensor_slices(x).batch(64),
                                       max_bops=1e12, batches=2)
    unbatched, _ = uniq_tf.allocate_bits(model, tf.data.Dataset.from_tensor_slices(x),
                                         max_bops=1e12, batches=2)
    assert unbatched == batched
    q = uniq_tf.quantize_model(model)
    ranges = uniq_tf.calibrate_activations(q, tf.data.Dataset.from_tensor_slices(x),
                                           verbose=False)
    assert ranges == uniq_tf.calibrate_activations(q, x, verbose=False)
