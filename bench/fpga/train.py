"""The models ``export`` and ``sweep`` build (TensorFlow side, imported lazily): the float
model, UNIQ W{b}A8 and its QUANTIZED-mode fine-tunes on a grid, and the uniform baseline
(TFMOT's uniform QAT) moved into a UNIQ-layout model with per-channel uniform codebooks."""

from __future__ import annotations


def float_model(name: str, x_train, y_train):
    """The float model every variant of ``name`` starts from: 5 epochs, Adam 3e-3, seed 0."""
    from bench import common
    from uniq_tf._keras import keras
    from uniq_tf.zoo import models

    common.set_seed(0)
    model = getattr(models, name)(input_shape=(8, 8, 1), num_classes=10)
    model.compile(keras.optimizers.Adam(3e-3), LOSS())
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    return model


def LOSS():  # noqa: N802 (a constant that needs TensorFlow, built lazily)
    from uniq_tf._keras import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def uniq(float_model, weight_bits: int, x_train, y_train):
    """UNIQ W{b}A8 of ``float_model`` (``quantize_model``'s defaults), activations calibrated
    on 512 training images, 2 epochs Adam 5e-4."""
    from uniq_tf import calibrate_activations, quantize_model
    from uniq_tf._keras import keras

    quantized = quantize_model(float_model, weight_bits=weight_bits, activation_bits=8)
    calibrate_activations(quantized, [x_train[:512]], verbose=False)
    quantized.compile(keras.optimizers.Adam(5e-4), LOSS())
    quantized.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return quantized


def uniform(float_model, weight_bits: int, x_train, y_train):
    """TFMOT's uniform b-bit QAT (bench.peers.uniform_qat, per channel, symmetric; narrow
    range from 3 bits) on the same float model with UNIQ's schedule: ranges set, activations
    calibrated, 2 epochs Adam 5e-4, then 2 epochs Adam 1e-4 from seed 0."""
    from bench import common, peers
    from uniq_tf import calibrate_activations
    from uniq_tf._keras import keras

    model = peers.uniform_qat(float_model, weight_bits, 8)
    peers.set_uniform_ranges(model)
    calibrate_activations(model, [x_train[:512]], verbose=False)
    model.compile(keras.optimizers.Adam(5e-4), LOSS())
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    common.set_seed(0)
    model.compile(keras.optimizers.Adam(1e-4), LOSS())
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return model


def uniform_grid(uniform_model):
    """Each uniform kernel of a ``bench.peers.uniform_qat`` model as TFMOT quantizes it,
    w_q = s_c n (TFMOT's fake_quant_with_min_max_vars_per_channel), written as a per-channel
    ``uniq_tf.Codebook`` of 2^b levels s_c * (lo..hi) (narrow range: 2^b - 1 values, the top
    one listed twice) and the integer n - lo of every weight. Returns (codebooks, kernels)."""
    import numpy as np

    import uniq_tf
    from bench import peers
    from uniq_tf import internals
    from uniq_tf._keras import tf
    from uniq_tf.integration.inspection import QuantizeWrapper

    codebooks, kernels = {}, {}
    for layer in uniform_model.layers:
        if not (isinstance(layer, QuantizeWrapper)
                and isinstance(layer.quantize_config, peers.UniformKernelConfig)):
            continue
        config = layer.quantize_config
        (weight, _, variables), = internals.wrapper_weight_vars(layer)
        lo_var, hi_var = variables["min_var"].numpy(), variables["max_var"].numpy()
        w_q = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            weight, lo_var, hi_var, num_bits=config.bits,
            narrow_range=config.narrow_range).numpy()
        steps = 2**config.bits - 1 - int(config.narrow_range)
        scale = (hi_var - lo_var) / steps  # the nudged range keeps the scale
        ints = np.round(w_q / scale)
        assert np.allclose(ints * scale, w_q, atol=1e-6 * np.abs(w_q).max()), layer.name
        top = 2 ** (config.bits - 1) - 1
        low = -top if config.narrow_range else -top - 1
        assert ints.min() >= low and ints.max() <= top, (layer.name, ints.min(), ints.max())
        values = np.arange(low, top + 1)
        values = np.append(values, [top] * (2**config.bits - len(values)))
        name = layer.layer.name
        codebooks[name] = uniq_tf.Codebook(
            name, "kernel", config.bits, (scale[:, None] * values[None]).astype(np.float32),
            (ints - low).astype(np.int32), (-1,), "uniform")
        kernels[name] = w_q
    return codebooks, kernels


def uniq_layout(uniform_model, float_model, weight_bits: int):
    """A ``uniq_tf.quantize_model`` model of the same architecture holding the uniform model's
    weights (kernels as TFMOT quantizes them), activation ranges and batch norms, and the
    codebooks to export it with (export_finn(..., codebooks=...)): the bundle then computes
    what the uniform model computes."""
    import uniq_tf
    from uniq_tf.util.graph import weight_name

    codebooks, kernels = uniform_grid(uniform_model)
    target = uniq_tf.quantize_model(float_model, weight_bits=weight_bits, activation_bits=8)
    source = {w.name: w for w in uniform_model.weights}
    for weight in target.weights:  # same layer names; the quantizers' own state differs
        layer, attr = weight.name.split("/")[0], weight_name(weight)
        if attr == "kernel" and layer in kernels:
            weight.assign(kernels[layer])
        elif weight.name in source:
            weight.assign(source[weight.name])
    uniq_tf.set_weight_mode(target, uniq_tf.Mode.QUANTIZED)
    return target, codebooks


def polish(model, grid_bits: int | None, x_train, y_train):
    """A copy of ``model`` fine-tuned 2 epochs in QUANTIZED mode (Adam 1e-4, seed 0), its
    codebooks on the ``grid_bits`` grid (None: as they are)."""
    import uniq_tf
    from bench import common
    from uniq_tf._keras import keras

    common.set_seed(0)
    with uniq_tf.quantize_scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    uniq_tf.set_grid_bits(copy, grid_bits)
    uniq_tf.set_weight_mode(copy, uniq_tf.Mode.QUANTIZED)
    copy.compile(keras.optimizers.Adam(1e-4), LOSS())
    copy.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return copy
