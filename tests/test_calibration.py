"""Activation ranges: calibration batches an array, refuses empty data and changes nothing
then, and a ReLU's quantizer starts and stays at 0 without calibration (a zero point FINN and
int8 can map)."""

import numpy as np
import pytest
from test_quantize import batch, small_cnn
from test_tflite_checks import _inputs, conv_net

import uniq_tf
from uniq_tf._keras import keras, tf

L = keras.layers


def test_calibrating_on_an_array_batches_it():
    x = np.random.default_rng(0).uniform(0, 1, (80, 8, 8, 1)).astype("float32")
    quantized = uniq_tf.quantize_model(conv_net())
    from_batches = uniq_tf.calibrate_activations(
        quantized, [x[i : i + 32] for i in range(0, 80, 32)], verbose=False
    )
    from_array = uniq_tf.calibrate_activations(quantized, x, verbose=False)
    assert from_array == from_batches
    assert from_array["conv"][1] > 0.1


def test_relu_quantizers_start_and_stay_at_zero_without_calibration(tmp_path):
    """Item 12: a fine-tune without calibrate_activations must not leave a ReLU's range below
    0 (a nonzero zero point FINN cannot map); a leaky ReLU keeps its signed range."""
    inp = keras.Input((6,))
    x = L.Dense(8, activation="relu", name="fused")(inp)
    x = L.ReLU(name="plain")(L.Dense(8, name="d2")(x))
    x = L.ReLU(negative_slope=0.1, name="leaky")(L.Dense(8, name="d3")(x))
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    quantized = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
    start = uniq_tf.get_activation_ranges(quantized)
    assert start["fused"][0] == start["plain"][0] == 0.0 and start["leaky"][0] == -6.0
    quantized.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_train = _inputs(128)
    quantized.fit(x_train, (x_train[:, 0] > 5).astype("int32"), epochs=2, verbose=0)
    ranges = uniq_tf.get_activation_ranges(quantized)
    assert ranges["fused"][0] == ranges["plain"][0] == 0.0
    assert ranges["fused"][1] != 6.0  # the maximum still tracks the data
    assert ranges["leaky"][0] < 0.0
    path = str(tmp_path / "m.h5")
    quantized.save(path)
    with uniq_tf.quantize_scope():
        loaded = keras.models.load_model(path, compile=False)
    assert uniq_tf.get_activation_ranges(loaded) == ranges
    configs = {w.layer.name: w.quantize_config.get_output_quantizers(w.layer)[0].non_negative
               for w in uniq_tf.integration.inspection.wrappers(loaded) if w.quantize_config
               .get_output_quantizers(w.layer)}
    assert configs == {"fused": True, "plain": True, "leaky": False}


def test_calibration_on_empty_data_is_an_error_and_changes_nothing():
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=2)
    uniq_tf.calibrate_activations(q, [batch(16)], verbose=False)
    uniq_tf.set_activation_mode(q, uniq_tf.ActMode.FLOAT, layers=["r1"])
    ranges, modes = uniq_tf.get_activation_ranges(q), uniq_tf.activation_modes(q)
    with pytest.raises(ValueError, match="no batch"):
        uniq_tf.calibrate_activations(q, [], verbose=False)
    with pytest.raises(ValueError, match="no batch"):
        uniq_tf.calibrate_activations(q, tf.data.Dataset.from_tensor_slices(batch(4)).take(0),
                                      verbose=False)
    assert uniq_tf.get_activation_ranges(q) == ranges
    assert uniq_tf.activation_modes(q) == modes
    for steps in (0, -1, 1.5):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            uniq_tf.calibrate_activations(q, [batch(4)], steps=steps, verbose=False)
