"""bench/lsq.py: LSQ's forward pass is uniform quantization at its step, its step starts where
the paper says and learns with the paper's scaled gradient, and it serializes."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from bench import lowbit, lowbit_data, lowbit_methods, lsq, peers
from uniq_tf._keras import keras, tf


def _built(quantizer, shape, step=None):
    """``quantizer`` built on a bare layer; ``step`` given: set and marked initialized."""
    variables = quantizer.build(tf.TensorShape(shape), "t", keras.layers.Layer())
    if step is not None:
        variables["step"].assign(step)
        variables["initialized"].assign(1)
    return variables


def _uniform(v, s, q_n, q_p):
    return s * np.clip(np.round(v / s), -q_n, q_p)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_forward_is_uniform_quantization_at_the_step(bits, per_channel):
    rng = np.random.default_rng(bits)
    q_n, q_p = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    # Many channel steps: s g + stop_gradient(s - s g) rounds to a neighbour of s for a few %.
    channels = 64
    s = (rng.uniform(0.02, 0.2, channels) if per_channel else np.array(0.07)).astype(np.float32)
    # About 5 % of the weights beyond each end of the grid.
    w = (rng.normal(0, q_n / 2, (3, 3, 4, channels)) * s).astype(np.float32)
    quantizer = lsq.LsqWeightQuantizer(bits, per_channel=per_channel)
    variables = _built(quantizer, w.shape, s)
    expected = _uniform(w, s, q_n, q_p)
    for training in (True, False):
        out = quantizer(tf.constant(w), training, variables).numpy()
        np.testing.assert_array_equal(out, expected)
    assert np.round(expected / s).min() == -q_n and np.round(expected / s).max() == q_p
    assert max(np.unique(c).size for c in out.reshape(-1, channels).T) <= 2**bits


@pytest.mark.parametrize("bits", [2, 8])
def test_activation_forward_is_unsigned_uniform_quantization_at_the_step(bits):
    rng = np.random.default_rng(bits)
    x = np.maximum(rng.normal(0, 1.5, (4, 6, 6, 3)), 0).astype(np.float32)
    s = np.float32(2.5 / 2**bits)
    quantizer = lsq.LsqActivationQuantizer(bits)
    variables = _built(quantizer, (None, 6, 6, 3), s)
    expected = _uniform(x, s, 0, 2**bits - 1)
    for training in (True, False):
        out = quantizer(tf.constant(x), training, variables).numpy()
        np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == s * (2**bits - 1)
    assert np.unique(out).size <= 2**bits


@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_step_starts_at_two_mean_abs_over_sqrt_qp(per_channel):
    w = np.random.default_rng(0).normal(0, 0.3, (3, 3, 2, 4)).astype(np.float32)
    quantizer = lsq.LsqWeightQuantizer(3, per_channel=per_channel)
    variables = _built(quantizer, w.shape)
    assert int(variables["initialized"].numpy()) == 0
    quantizer(tf.constant(w), False, variables)  # the first call sets it, in either mode
    axis = (0, 1, 2) if per_channel else None
    expected = 2 * np.abs(w).mean(axis=axis) / np.sqrt(3)
    np.testing.assert_allclose(variables["step"].numpy(), expected, rtol=1e-6)
    assert int(variables["initialized"].numpy()) == 1
    variables["step"].assign(variables["step"] * 2)
    quantizer(tf.constant(w), True, variables)  # not set again
    np.testing.assert_allclose(variables["step"].numpy(), 2 * expected, rtol=1e-6)


def test_activation_step_starts_from_the_first_training_batch_only():
    rng = np.random.default_rng(1)
    first, second = (np.maximum(rng.normal(0, 1, (8, 5)), 0).astype(np.float32)
                     for _ in range(2))
    quantizer = lsq.LsqActivationQuantizer(4)
    variables = _built(quantizer, (None, 5))
    quantizer(tf.constant(second), False, variables)  # inference does not initialize
    assert int(variables["initialized"].numpy()) == 0 and variables["step"].numpy() == 1.0
    quantizer(tf.constant(first), True, variables)
    quantizer(tf.constant(second), True, variables)
    assert variables["step"].numpy() == pytest.approx(2 * first.mean() / np.sqrt(15), rel=1e-6)


@pytest.mark.parametrize("kind", ["weight", "activation"])
def test_gradients_have_the_lsq_form(kind):
    """d/ds sum(u v_hat) = g sum(u (round(v/s) - v/s)) inside the range, -Q_N / Q_P times u
    where clipped, g = 1/sqrt(N Q_P); d/dv = u inside the range, 0 outside."""
    rng = np.random.default_rng(2)
    if kind == "weight":
        quantizer, shape, (q_n, q_p) = lsq.LsqWeightQuantizer(3), (4, 6), (4, 3)
        v = rng.uniform(-1.5, 1.5, shape)
        n = v.size
    else:
        quantizer, shape, (q_n, q_p) = lsq.LsqActivationQuantizer(2), (4, 6), (0, 3)
        v = rng.uniform(-0.5, 1.5, shape)
        n = shape[1]  # features per example
    s = 0.25
    v, u = v.astype(np.float32), rng.normal(size=shape).astype(np.float32)
    variables = _built(quantizer, (None,) + shape[1:] if kind == "activation" else shape, s)
    v_tensor = tf.constant(v)
    with tf.GradientTape() as tape:
        tape.watch(v_tensor)
        loss = tf.reduce_sum(quantizer(v_tensor, True, variables) * u)
    grad_s, grad_v = tape.gradient(loss, [variables["step"], v_tensor])
    r = v / np.float32(s)
    low, high = r < -q_n, r > q_p
    assert low.any() and high.any() and (~low & ~high).any()
    local = np.where(low, -q_n, np.where(high, q_p, np.round(r) - r))
    expected = np.sum(u * local) / np.sqrt(n * q_p)
    assert grad_s.numpy() == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(grad_v.numpy(), np.where(low | high, 0, u), rtol=1e-6)


def _tiny_data(n=64):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, n)


def _steps(model):
    return {v.name: v.numpy() for v in model.weights if lsq.STEP_VARIABLE in v.name}


def test_lsq_model_quantizes_where_uniform_qat_does_and_leaves_the_float_model():
    float_ = lowbit_data.tiny_cnn()
    before = [w.copy() for w in float_.get_weights()]
    model = lsq.lsq_model(float_, 2, 8)
    uniform = peers.uniform_qat(float_, 2, 8)

    def wrapped(m):
        return [layer.name for layer in m.layers
                if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2)]

    assert wrapped(model) == wrapped(uniform) == ["conv1", "relu1", "conv2", "relu2", "fc"]
    assert len(_steps(model)) == 5
    x, _ = _tiny_data(4)
    np.testing.assert_array_equal(lsq.lsq_model(float_, 2, 8)(x), model(x))
    for a, b in zip(before, float_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_steps_learn_in_fit_and_stay_finite():
    keras.utils.set_random_seed(0)
    model = lsq.lsq_model(lowbit_data.tiny_cnn(), 2, 4)
    x, y = _tiny_data()
    model(x[:1], training=False)  # weight steps initialize on the first call
    initial = _steps(model)
    lowbit_data.compile_model(model, keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    trained = _steps(model)
    for name, value in trained.items():
        assert np.isfinite(value).all() and value > 0, name
        assert abs(value - initial[name]) > 1e-3, f"{name} did not learn"


def test_configs_and_quantizers_round_trip_their_config_and_a_model_its_steps(tmp_path):
    for obj in (lsq.LsqWeightQuantizer(3, per_channel=True, channel_axis=2),
                lsq.LsqActivationQuantizer(5, signed=True),
                lsq.LsqKernelConfig(2, per_channel=True), lsq.LsqActivationConfig(4)):
        config = keras.utils.serialize_keras_object(obj)
        assert config["registered_name"].startswith("uniq_tf_bench>")
        again = keras.utils.deserialize_keras_object(config)
        assert type(again) is type(obj) and again.get_config() == obj.get_config()
    assert lsq.LsqWeightQuantizer(3) != lsq.LsqWeightQuantizer(3, per_channel=True)
    with pytest.raises(ValueError, match="2..16"):
        lsq.LsqWeightQuantizer(1)

    model = lsq.lsq_model(lowbit_data.tiny_cnn(), 2, 4)
    x, y = _tiny_data(16)
    lowbit_data.compile_model(model, keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "lsq.h5")
    with tfmot.quantization.keras.quantize_scope():
        loaded = keras.models.load_model(tmp_path / "lsq.h5", compile=False)
    assert _steps(loaded).keys() == _steps(model).keys()
    np.testing.assert_array_equal(loaded(x), model(x))
    loaded(x, training=True)  # a loaded model keeps its steps: no second initialization
    for name, value in _steps(model).items():
        assert _steps(loaded)[name] == value


def test_the_low_bit_suite_runs_lsq_per_tensor_on_every_schedule():
    assert "lsq" in lowbit_methods.METHODS and "lsq" in lowbit_methods.FINE_TUNED
    assert "lsq" in lowbit.MAIN_METHODS  # the grid the suite runs
    model = lowbit_methods.build("lsq", lowbit_data.tiny_cnn(), 2, 8)
    steps = _steps(model)
    assert len(steps) == 5 and all(v.shape == () for v in steps.values())
