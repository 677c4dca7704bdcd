"""quantize_model, modes, gradients, strip/codebooks, save/load and bad input."""

import warnings

import numpy as np
import pytest

import uniq_tf
from uniq_tf import Mode
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import kernel_wrappers, weight_quantizers
from uniq_tf.method.quantizers import KQuantileWeightQuantizer

L = keras.layers


def small_cnn(name="cnn"):
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.ReLU(name="r2")(x)
    x = L.Flatten()(x)
    out = L.Dense(10, name="fc")(x)
    return keras.Model(inp, out, name=name)


def residual_model():
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="b1")(x)
    y = L.BatchNormalization(name="b1_bn")(y)
    y = L.ReLU(name="b1_relu")(y)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="b2")(y)
    x = L.Add(name="add")([x, y])
    x = L.ReLU(name="add_relu")(x)
    z = L.Conv2D(4, 1, activation="relu", name="side")(x)
    x = L.Concatenate(name="cat")([x, z])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, name="fc")(x), name="residual")


def nested_model():
    inner = small_cnn("backbone")
    inp = keras.Input((8, 8, 1))
    x = inner(inp)
    out = L.Dense(3, name="head")(x)
    return keras.Model(inp, out, name="outer")


def batch(n=16, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8, 1), dtype=np.float32)


def save_and_load(model, folder, fmt):
    """``model`` saved to ``folder`` as .h5 (``fmt="h5"``) or SavedModel (``"tf"``), loaded
    back in uniq_tf's quantize scope."""
    path = str(folder / ("m.h5" if fmt == "h5" else "m_savedmodel"))
    model.save(path, save_format=fmt)
    with uniq_tf.quantize_scope():
        return keras.models.load_model(path)


# --------------------------------------------------------------------------- structure


def test_quantize_model_wraps_kernels_and_activations_only():
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=3, activation_bits=6)
    assert [w.layer.name for w in kernel_wrappers(q)] == ["c1", "dw", "fc"]
    assert set(uniq_tf.activation_modes(q)) == {"r1", "r2"}
    assert isinstance(q.get_layer("bn1"), L.BatchNormalization)
    assert all(m == Mode.NOISY for m in uniq_tf.weight_modes(q).values())  # default: all noisy
    assert {cb.bits for cb in uniq_tf.get_codebooks(q).values()} == {3}
    assert {b for *_, b in uniq_tf.get_activation_ranges(q).values()} == {6}


def test_quantize_model_keeps_original_model_untouched():
    model = small_cnn()
    before = [w.numpy().copy() for w in model.weights]
    q = uniq_tf.quantize_model(model)
    kernel = uniq_tf.integration.inspection.float_kernel(q.get_layer("c1"))
    kernel.assign(tf.zeros_like(kernel))
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights, strict=False))


def test_layer_bits_mixed_precision_and_skip_layers():
    q = uniq_tf.quantize_model(
        small_cnn(), weight_bits=4, activation_bits=8,
        layer_bits={"c1": (8, 4), "dw": (2, None)}, skip_layers=["fc"],
    )
    cb = uniq_tf.get_codebooks(q)
    assert {n: c.bits for n, c in cb.items()} == {"c1": 8, "dw": 2}
    ranges = uniq_tf.get_activation_ranges(q)
    assert ranges["r1"][2] == 4  # follows c1's activation bits
    assert ranges["r2"][2] == 8  # dw keeps the default activation bits
    assert isinstance(q.get_layer("fc"), L.Dense)


@pytest.mark.parametrize("builder", [residual_model, nested_model])
def test_residual_and_nested_models_quantize_and_run(builder):
    model = builder()
    x = batch()
    q = uniq_tf.quantize_model(model, weight_bits=4)
    assert len(kernel_wrappers(q)) >= 3
    out = q(x, training=False).numpy()
    assert out.shape == model(x).shape and np.all(np.isfinite(out))
    stripped = uniq_tf.strip_quantization(q)
    assert [type(layer).__name__ for layer in stripped.layers] == [
        type(layer).__name__ for layer in model.layers
    ]
    for name, cb in uniq_tf.get_codebooks(q).items():
        kernel = _find_layer(stripped, name).weights[0].numpy()
        assert np.array_equal(cb.levels[cb.indices], kernel)
        assert len(np.unique(kernel)) <= 16


def _find_layer(model, name):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            try:
                return _find_layer(layer, name)
            except KeyError:
                pass
    raise KeyError(name)


def test_mobilenet_from_applications_quantizes():
    model = keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=10
    )
    q = uniq_tf.quantize_model(model, weight_bits=4)
    assert len(kernel_wrappers(q)) == 28  # 27 conv/depthwise + the classifier (a 1x1 conv)
    out = q(np.zeros((2, 32, 32, 3), np.float32), training=False)
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------- math in the layer


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("distribution", ["gaussian", "empirical"])
def test_stripped_kernels_are_exactly_the_codebook(per_channel, distribution):
    model = small_cnn()
    q = uniq_tf.quantize_model(model, weight_bits=2, per_channel=per_channel,
                               distribution=distribution)
    stripped = uniq_tf.strip_quantization(q)
    x = batch()
    for name, cb in uniq_tf.get_codebooks(q).items():
        kernel = stripped.get_layer(name).weights[0].numpy()
        assert np.array_equal(cb.dequantize(), kernel)
        if not per_channel:
            assert np.array_equal(cb.levels[cb.indices], kernel)
            assert len(np.unique(kernel)) <= 4
        else:
            axes = cb.channel_axes
            per = kernel.reshape(-1, kernel.shape[-1]) if axes == (-1,) else kernel.reshape(
                -1, kernel.shape[2] * kernel.shape[3])
            assert all(len(np.unique(per[:, c])) <= 4 for c in range(per.shape[1]))
    # With activation quantization off, the quantized model is the stripped model.
    uniq_tf.set_activation_mode(q, uniq_tf.ActMode.FLOAT)
    np.testing.assert_array_equal(q(x, training=False).numpy(), stripped(x).numpy())


def _quantizer_and_var(mode):
    quantizer = KQuantileWeightQuantizer(3)
    holder = L.Layer()
    variables = quantizer.build((4, 5), "w", holder)
    variables["mode"].assign(int(mode))
    return quantizer, variables


@pytest.mark.parametrize("mode", [Mode.NOISY, Mode.QUANTIZED, Mode.FLOAT])
def test_gradient_reaches_the_float_kernel_unchanged(mode):
    quantizer, variables = _quantizer_and_var(mode)
    w = tf.Variable(np.random.default_rng(1).normal(size=(4, 5)).astype("f4"))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(4, 5)).astype("f4"))
    with tf.GradientTape() as tape:
        out = quantizer(w, True, variables)
        loss = tf.reduce_sum(out * upstream)
    np.testing.assert_array_equal(tape.gradient(loss, w).numpy(), upstream.numpy())
    if mode == Mode.FLOAT:
        np.testing.assert_array_equal(out.numpy(), w.numpy())
    else:
        assert not np.array_equal(out.numpy(), w.numpy())


def test_noisy_mode_draws_fresh_noise_in_training_and_codebook_at_inference():
    quantizer, variables = _quantizer_and_var(Mode.NOISY)
    w = tf.constant(np.random.default_rng(3).normal(size=(64, 8)).astype("f4"))
    a = quantizer(w, True, variables).numpy()
    b = quantizer(w, True, variables).numpy()
    assert not np.array_equal(a, b)
    assert len(np.unique(a)) > 8  # noise, not a codebook
    inference = quantizer(w, False, variables).numpy()
    np.testing.assert_array_equal(inference, uniq_tf.kquantile.quantize(w, 3).numpy())
    assert len(np.unique(inference)) <= 8


def _activation_quantizers(bits, mode):
    """uniq_tf's switchable activation quantizer (in ``mode``) and TFMOT's MovingAverage-
    Quantizer, each built on its own holder layer with the same initial range."""
    import tensorflow_model_optimization as tfmot

    ours = uniq_tf.SwitchableActivationQuantizer(bits, initial_mode=int(mode))
    tfmot_q = tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
        num_bits=bits, per_axis=False, symmetric=False, narrow_range=False)
    built = []
    for quantizer in (ours, tfmot_q):
        holder = keras.layers.Layer()
        variables = quantizer.build((None, 6, 6, 4), "act", holder)
        variables["min_var"].assign(-0.5)
        variables["max_var"].assign(1.0)
        built.append((quantizer, variables))
    return built


def _steps(quantizer, variables, inputs, training):
    """Outputs, input gradients and (min, max) after each of ``len(inputs)`` calls."""

    @tf.function
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = quantizer(x, training, variables)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, x)

    results = []
    for i, x in enumerate(inputs):
        upstream = tf.constant(np.random.default_rng(100 + i).normal(size=x.shape), tf.float32)
        out, grad = step(tf.constant(x), upstream)
        results.append((out.numpy(), grad.numpy(), variables["min_var"].numpy(),
                        variables["max_var"].numpy()))
    return results


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("training", [True, False])
def test_quantized_activations_are_bit_identical_to_tfmot_moving_average_quantizer(
        bits, training):
    (ours, our_vars), (theirs, their_vars) = _activation_quantizers(bits, uniq_tf.ActMode.QUANTIZED)
    rng = np.random.default_rng(7)
    inputs = [(rng.normal(size=(3, 6, 6, 4)) * (1 + i)).astype("f4") for i in range(4)]
    mine = _steps(ours, our_vars, inputs, training)
    tfmot_results = _steps(theirs, their_vars, inputs, training)
    for (out, grad, lo, hi), (t_out, t_grad, t_lo, t_hi) in zip(mine, tfmot_results, strict=True):
        np.testing.assert_array_equal(out, t_out)
        np.testing.assert_array_equal(grad, t_grad)
        assert (lo, hi) == (t_lo, t_hi)
        assert len(np.unique(out)) <= 2 ** bits
    moved = mine[-1][2:] != (-0.5, 1.0)
    assert moved == training  # the EMA range moves in training only


def test_float_activations_pass_through_and_keep_tracking_the_range_in_training():
    (ours, our_vars), (theirs, their_vars) = _activation_quantizers(8, uniq_tf.ActMode.FLOAT)
    rng = np.random.default_rng(8)
    inputs = [(rng.normal(size=(3, 6, 6, 4)) * 3).astype("f4") for _ in range(3)]
    mine = _steps(ours, our_vars, inputs, True)
    tfmot_results = _steps(theirs, their_vars, inputs, True)
    for x, (out, _, lo, hi), (_, _, t_lo, t_hi) in zip(inputs, mine, tfmot_results,
                                                     strict=True):
        np.testing.assert_array_equal(out, x)
        assert (lo, hi) == (t_lo, t_hi)  # the same range TFMOT's quantizer would have learnt
    # The input gradient is the upstream gradient itself (no clipping in FLOAT mode).
    upstream = np.random.default_rng(100).normal(size=inputs[0].shape).astype("f4")
    np.testing.assert_array_equal(mine[0][1], upstream)


def test_switching_mode_changes_forward_pass_without_retracing():
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=2)
    uniq_tf.set_weight_mode(q, Mode.FLOAT)
    # Activation ranges move while training; keep them out so only the weight mode differs.
    uniq_tf.set_activation_mode(q, uniq_tf.ActMode.FLOAT)
    q.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True))
    x, y = batch(32), np.arange(32) % 10
    schedule = [Mode.FLOAT, Mode.QUANTIZED, Mode.FLOAT, Mode.QUANTIZED]

    class Switch(keras.callbacks.Callback):
        traces = []

        def on_epoch_end(self, epoch, logs=None):
            self.traces.append(self.model.train_function.experimental_get_tracing_count())
            if epoch + 1 < len(schedule):
                uniq_tf.set_weight_mode(self.model, schedule[epoch + 1])

    history = q.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0,
                    callbacks=[Switch()])
    losses = history.history["loss"]
    # Keras traces the train function on its first epoch; mode switches add no trace.
    assert Switch.traces == [Switch.traces[0]] * 4
    assert losses[0] == losses[2] and losses[1] == losses[3]
    assert losses[0] != losses[1]


def test_high_noise_widens_the_noise():
    w = tf.constant(np.random.default_rng(4).normal(size=(4096,)).astype("f4"))
    spread = {}
    for scale in (1.0, 2.0):
        noisy = uniq_tf.kquantile.add_noise(w, 2, noise_scale=scale)
        u = uniq_tf.kquantile.uniformize(tf.reshape(noisy, (1, -1)),
                                         uniq_tf.kquantile.fit(tf.reshape(w, (1, -1))))
        u0 = uniq_tf.kquantile.uniformize(tf.reshape(w, (1, -1)),
                                          uniq_tf.kquantile.fit(tf.reshape(w, (1, -1))))
        spread[scale] = float(tf.reduce_max(tf.abs(u - u0)))
    assert spread[1.0] <= 1 / 8 + 1e-3 < spread[2.0] <= 1 / 4 + 1e-3
    q = uniq_tf.quantize_model(small_cnn(), high_noise=True)
    scales = {qz.noise_scale for w_ in kernel_wrappers(q) for _, qz, _ in weight_quantizers(w_)}
    assert scales == {2.0}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_bits": 0}, "weight_bits must be an integer in 1..16, got 0"),
        ({"weight_bits": 17}, "weight_bits must be an integer in 1..16, got 17"),
        ({"weight_bits": 4.0}, "weight_bits must be an integer"),
        ({"activation_bits": 1}, "activation_bits must be an integer in 2..16, got 1"),
        ({"activation_bits": 32}, "activation_bits must be an integer in 2..16, got 32"),
        ({"layer_bits": {"nope": (4, 8)}}, "Unknown layer names ['nope']"),
        ({"skip_layers": ["c9"]}, "Unknown layer names ['c9']"),
        ({"layer_bits": {"c1": (0, 8)}}, "layer_bits['c1'][0] must be an integer in 1..16"),
        ({"layer_bits": {"c1": 4}}, "must be a pair"),
        ({"layer_bits": {"bn1": (2, 2)}}, "names 'bn1' (BatchNormalization), which UNIQ does not"),
        ({"layer_bits": {"r1": (2, 3)}}, "sets weight bits 2, but 'r1' is an activation layer"),
        ({"distribution": "laplace"}, "distribution must be one of"),
        ({"skip_layers": ["c1", "dw", "fc"]}, "has no layer UNIQ can quantize"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        uniq_tf.quantize_model(small_cnn(), **kwargs)
    assert message in str(err.value)


def test_unbuilt_and_subclassed_models_are_rejected():
    with pytest.raises(ValueError, match="not built"):
        uniq_tf.quantize_model(keras.Sequential([L.Dense(3)]))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="subclassed"):
        uniq_tf.quantize_model(sub)


def test_keras3_model_is_rejected_with_advice():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="Keras 3.*tf_keras"):
        uniq_tf.quantize_model(model)
    with pytest.raises(TypeError, match="Keras 3"):
        uniq_tf.strip_quantization(model)


def test_layers_left_in_float_are_named_in_a_warning():
    inp = keras.Input((8, 8, 1))
    x = L.Conv2DTranspose(4, 3, name="up")(inp)
    x = L.Flatten()(x)
    model = keras.Model(inp, L.Dense(3, name="fc")(x))
    with pytest.warns(UserWarning, match=r"up \(Conv2DTranspose\)"):
        q = uniq_tf.quantize_model(model)
    assert [w.layer.name for w in kernel_wrappers(q)] == ["fc"]


def test_strip_of_a_float_model_is_an_error():
    with pytest.raises(ValueError, match="quantize_model first"):
        uniq_tf.strip_quantization(small_cnn())


def test_sequential_model_is_supported():
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu"),
                              L.Flatten(), L.Dense(10)])
    q = uniq_tf.quantize_model(model, weight_bits=2)
    assert isinstance(q, keras.Sequential)
    assert len(np.unique(uniq_tf.strip_quantization(q).layers[0].kernel.numpy())) <= 4


def test_quantizing_a_quantized_model_says_so_and_nothing_else():
    quantized = uniq_tf.quantize_model(small_cnn())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="is already quantized"):
            uniq_tf.quantize_model(quantized)
    assert not [w for w in record if "left in float" in str(w.message)
                or "leaves these layers in float" in str(w.message)]
