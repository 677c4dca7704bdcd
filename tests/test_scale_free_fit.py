"""The k-quantile fit has no absolute floor: the codebook of a * w is a * (the codebook of w) for
any scale float32 can hold, a constant tensor is its own codebook, and a layer with tiny weights
is quantized as well as one with ordinary weights."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import uniq_tf
from uniq_tf._keras import keras
from uniq_tf.integration import registry
from uniq_tf.method import kquantile

L = keras.layers


# Weights of magnitude 1e-3..3 (or 0): scaled by 1e-30..1e30 they stay normal float32 numbers
# (a subnormal product has fewer significant bits than any tolerance here).
WEIGHTS = st.floats(-3, 3, width=32).filter(lambda v: v == 0 or abs(v) >= 1e-3)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    w=arrays(np.float32, (6, 40), elements=WEIGHTS),
    exponent=st.floats(-30, 30),
    bits=st.integers(1, 5),
    distribution=st.sampled_from(kquantile.DISTRIBUTIONS),
    per_channel=st.booleans(),
)
def test_the_codebook_of_a_scaled_tensor_is_the_scaled_codebook(w, exponent, bits, distribution,
                                                                 per_channel):
    a = np.float32(10.0**exponent)
    axes = (0,) if per_channel else None
    levels, indices = kquantile.codebook(w, bits, axes, distribution)
    scaled_levels, scaled_indices = kquantile.codebook(w * a, bits, axes, distribution)
    top = np.abs(levels).max()
    np.testing.assert_allclose(scaled_levels, levels * a, rtol=1e-4,
                               atol=1e-5 * float(top) * float(a))
    assert np.mean(scaled_indices == indices) >= 0.97  # a weight on a bin edge may move


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e6])
def test_a_4bit_dense_at_any_weight_scale_computes_its_scale_1_quantization_scaled(scale):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32,))
    model = keras.Model(inputs, L.Dense(8, name="d")(inputs))
    kernel, bias = model.get_weights()
    x = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)

    def quantized_outputs(factor):
        model.set_weights([kernel * np.float32(factor), bias * np.float32(factor)])
        q = uniq_tf.quantize_model(model, 4, 8, skip_layers=())
        uniq_tf.set_weight_mode(q, uniq_tf.Mode.QUANTIZED)
        book = uniq_tf.get_codebooks(q)["d"]
        return q(x, training=False).numpy(), book

    reference, book_1 = quantized_outputs(1.0)
    outputs, book = quantized_outputs(scale)
    assert len(np.unique(book.dequantize())) == 16  # 2^b levels at every scale
    np.testing.assert_allclose(book.levels, book_1.levels * scale, rtol=1e-5)
    np.testing.assert_allclose(outputs, reference * scale, rtol=1e-4,
                               atol=1e-5 * np.abs(reference).max() * scale)


def test_tiny_weights_are_not_blown_up():
    """The paper's sigma >= 1e-5 turned weights of 1e-8 into 2 levels about 1e-6 apart, an
    error 78 times the weights; scale-free, their error is the unit scale's times 1e-8."""
    unit = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    tiny = unit * np.float32(1e-8)
    quantized = kquantile.quantize(tiny, 4).numpy()
    assert len(np.unique(quantized)) == 16
    error = np.abs(quantized - tiny).max()
    unit_error = np.abs(kquantile.quantize(unit, 4).numpy() - unit).max()
    assert error == pytest.approx(unit_error * 1e-8, rel=1e-4)


def test_a_constant_tensor_is_its_own_codebook():
    w = np.full((5, 7), 0.3, np.float32)
    levels, indices = kquantile.codebook(w, 3)
    np.testing.assert_allclose(levels, np.full(8, 0.3, np.float32), rtol=1e-7)
    np.testing.assert_allclose(kquantile.quantize(w, 3).numpy(), w, rtol=1e-7)
    np.testing.assert_allclose(kquantile.add_noise(w, 3).numpy(), w, rtol=1e-7)
    zeros = np.zeros((4, 4), np.float32)
    np.testing.assert_array_equal(kquantile.quantize(zeros, 2).numpy(), zeros)


def test_a_registered_axis_outside_the_kernel_is_an_error_naming_layer_shape_and_axis():
    class Scale(L.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight("kernel", input_shape[-1:])

        def call(self, x):
            return x * self.kernel

    registry.register_layer(Scale, {"kernel": 5})
    try:
        inputs = keras.Input((6,))
        model = keras.Model(inputs, L.Dense(2, name="fc")(Scale(name="s")(inputs)))
        with pytest.raises(ValueError, match=r"layer 's' \(Scale\): its kernel 'kernel' has shape "
                                             r"\(6,\), so output-channel axis 5 is outside"):
            uniq_tf.quantize_model(model, per_channel=True)
    finally:
        registry.unregister_layer(Scale)
