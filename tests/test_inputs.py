"""Every entry point that reads inputs takes the same forms (uniq_tf.inputs) and gets the same
values from each: calibration ranges, representative samples, sensitivity batches."""

import numpy as np
import pytest

import uniq_tf
from tflite_export import samples as tflite_samples
from uniq_tf import inputs
from uniq_tf._keras import keras, tf
from uniq_tf.cost import sensitivity

L = keras.layers
X = np.random.default_rng(0).uniform(0, 1, (70, 6, 6, 1)).astype("float32")
Y = np.arange(70, dtype="int32") % 3


def forms() -> dict:
    """The same 70 inputs (and labels) in every accepted form, in batches of 32 where the form
    has batches of its own."""
    chunks = [slice(0, 32), slice(32, 64), slice(64, 70)]
    return {
        "array": X,
        "tensor": tf.constant(X),
        "xy_pair": (X, Y),
        "dataset_xy": tf.data.Dataset.from_tensor_slices((X, Y)).batch(32),
        "dataset_x": tf.data.Dataset.from_tensor_slices(X).batch(32),
        "list_of_batches": [X[c] for c in chunks],
        "generator": (X[c] for c in chunks),
        "converter_function": lambda: ([X[c]] for c in chunks),
    }


def model():
    i = keras.Input((6, 6, 1))
    h = L.Conv2D(4, 3, activation="relu", name="conv")(i)
    return keras.Model(i, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(h)))


@pytest.mark.parametrize("form", list(forms()))
def test_every_form_gives_the_same_inputs(form):
    data = forms()[form]
    got = [np.asarray(x) for x, _ in inputs.batches(data, 32)]
    np.testing.assert_array_equal(np.concatenate(got), X)
    labels = [y for _, y in inputs.batches(forms()[form], 32)]
    if form in ("xy_pair", "dataset_xy"):
        np.testing.assert_array_equal(np.concatenate([np.asarray(y) for y in labels]), Y)
    else:
        assert all(y is None for y in labels)


@pytest.mark.parametrize("form", list(forms()))
def test_calibration_samples_and_sensitivity_batches_agree_across_forms(form):
    keras.utils.set_random_seed(0)
    q = uniq_tf.quantize_model(model(), 4, 8)
    ranges = uniq_tf.calibrate_activations(q, forms()[form], verbose=False)
    reference = uniq_tf.calibrate_activations(q, [X], verbose=False)
    assert ranges == reference
    np.testing.assert_array_equal(tflite_samples.as_samples(forms()[form], q), X)
    taken = sensitivity.sample_batches(forms()[form], batches=10)
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in taken]), X)


def test_a_list_is_batches_and_bad_forms_are_named():
    two = [X[:10], X[10:20]]  # two batches of inputs, not (x, y)
    assert [len(x) for x, y in inputs.batches(two, 32)] == [10, 10]
    with pytest.raises(TypeError, match="must be an array of inputs.*got int"):
        list(inputs.batches(3, 32))
    with pytest.raises(TypeError, match="not dicts"):
        list(inputs.batches([{"x": X}], 32))
