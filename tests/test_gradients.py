"""Identity gradients inside a traced function, through the wrapped layer (not only eagerly on
the bare quantizer), equal to the stripped model's."""

import numpy as np
import pytest
from test_quantize import batch, small_cnn

import uniq_tf
from uniq_tf import Mode
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import float_kernel
from uniq_tf.method.quantizers import KQuantileWeightQuantizer

L = keras.layers


@pytest.mark.parametrize("mode", [Mode.NOISY, Mode.QUANTIZED])
def test_identity_gradient_inside_tf_function(mode):
    quantizer = KQuantileWeightQuantizer(3)
    variables = quantizer.build((16, 8), "w", L.Layer())
    variables["mode"].assign(int(mode))
    w = tf.Variable(np.random.default_rng(1).normal(size=(16, 8)).astype("f4"))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(16, 8)).astype("f4"))

    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            out = quantizer(w, True, variables)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, w)

    out, g = grad()
    np.testing.assert_array_equal(g.numpy(), upstream.numpy())
    assert not np.array_equal(out.numpy(), w.numpy())  # the forward pass did change w


def test_quantized_layer_gradient_equals_the_stripped_models_gradient():
    """Straight through in a real model: d loss / d float kernel of the quantized model equals
    d loss / d kernel of the plain model holding the codebook values (same forward pass)."""
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=2)
    uniq_tf.set_weight_mode(q, Mode.QUANTIZED)
    uniq_tf.set_activation_mode(q, uniq_tf.ActMode.FLOAT)  # the stripped model has none
    stripped = uniq_tf.strip_quantization(q)
    x, y = batch(8), np.arange(8) % 10
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def gradients(model, variables):
        with tf.GradientTape() as tape:
            # training=False: batch norm uses its moving statistics in both models.
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, variables)

    names = ["c1", "dw", "fc"]
    got = gradients(q, [float_kernel(q.get_layer(n), a) for n, a in
                        (("c1", "kernel"), ("dw", "depthwise_kernel"), ("fc", "kernel"))])
    want = gradients(stripped, [stripped.get_layer(n).weights[0] for n in names])
    for name, a, b in zip(names, got, want, strict=True):
        assert np.abs(b.numpy()).max() > 0, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)
