"""The TFMOT-style API (uniq_tf.annotate): annotate layers, apply (ours and TFMOT's with
UniqScheme), and custom layer types registered with uniq_tf.register_layer."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

import tflite_export
import uniq_tf
from uniq_tf import Mode
from uniq_tf._keras import keras, tf

L = keras.layers


def three_conv_model():
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    h = L.ReLU(name="relu1")(h)
    h = L.Conv2D(8, 3, padding="same", name="conv2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, L.Dense(10, name="fc")(h))


def annotate(model, bits: dict[str, dict]):
    """A copy of ``model`` (fresh layers) with the layers named in ``bits`` annotated."""

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        return uniq_tf.quantize_annotate_layer(copy, **bits[layer.name]) if layer.name in bits \
            else copy

    return keras.models.clone_model(model, clone_function=clone)


def kernel_layers(model) -> dict[str, int]:
    """Quantized kernel layer name -> its codebook width."""
    return {name: book.bits for name, book in uniq_tf.get_codebooks(model).items()}


def activation_layers(model) -> set[str]:
    return set(uniq_tf.get_activation_ranges(model))


def test_annotate_two_layers_apply_train_strip_and_export(digits, tmp_path):
    x_train, y_train, x_test, _ = digits
    model = three_conv_model()
    annotated = annotate(model, {"conv1": {"weight_bits": 2}, "fc": {}})
    quantized = uniq_tf.quantize_apply(annotated, weight_bits=4, activation_bits=8)
    # Exactly the annotated kernels, at their widths; relu1 follows conv1, relu2 follows the
    # float conv2 and stays float.
    assert kernel_layers(quantized) == {"conv1": 2, "fc": 4}
    assert activation_layers(quantized) == {"relu1"}
    wrapper_type = uniq_tf.integration.inspection.QuantizeWrapper
    assert not isinstance(quantized.get_layer("conv2"), wrapper_type)

    uniq_tf.calibrate_activations(quantized, x_train[:128], verbose=False)
    quantized.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    before = quantized.get_layer("conv2").kernel.numpy().copy()
    history = quantized.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(before, quantized.get_layer("conv2").kernel.numpy())  # trained

    uniq_tf.set_weight_mode(quantized, Mode.QUANTIZED)
    stripped = uniq_tf.strip_quantization(quantized)
    assert len(np.unique(stripped.get_layer("conv1").kernel.numpy())) <= 4
    assert len(np.unique(stripped.get_layer("fc").kernel.numpy())) <= 16
    assert len(np.unique(stripped.get_layer("conv2").kernel.numpy())) > 16  # float
    report = tflite_export.export_tflite(quantized, tmp_path / "m.tflite", "float",
                                         samples=x_test[:32])
    assert report.samples_checked == 32 and report.max_abs_diff <= report.tolerance
    np.testing.assert_allclose(
        tflite_export.predict(str(tmp_path / "m.tflite"), x_test[:32]),
        stripped.predict(x_test[:32], verbose=0), atol=1e-4)


def test_quantize_model_is_apply_of_the_annotated_model():
    model = three_conv_model()
    direct = uniq_tf.quantize_model(model, 3, 6)
    applied = uniq_tf.quantize_apply(uniq_tf.quantize_annotate_model(model), 3, 6)
    assert kernel_layers(direct) == kernel_layers(applied) == {"conv1": 3, "conv2": 3, "fc": 3}
    assert activation_layers(direct) == activation_layers(applied) == {"relu1", "relu2"}
    for m in (direct, applied):
        uniq_tf.set_weight_mode(m, Mode.QUANTIZED)
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(direct(x).numpy(), applied(x).numpy())


def test_tfmot_quantize_apply_with_uniq_scheme():
    model = three_conv_model()
    annotated = annotate(model, {"conv2": {}, "relu2": {}})
    quantized = tfmot.quantization.keras.quantize_apply(
        annotated, scheme=uniq_tf.UniqScheme(weight_bits=2, activation_bits=4))
    assert kernel_layers(quantized) == {"conv2": 2}
    assert activation_layers(quantized) == {"relu2"}
    ours = uniq_tf.quantize_apply(annotated, 2, 4)
    for m in (quantized, ours):
        uniq_tf.set_weight_mode(m, Mode.QUANTIZED)
    x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(quantized(x).numpy(), ours(x).numpy())


def test_annotation_errors_name_the_layer_and_the_way_out():
    with pytest.raises(ValueError, match=r"'flat' \(Flatten\).*register_layer"):
        uniq_tf.quantize_annotate_layer(L.Flatten(name="flat"))
    with pytest.raises(ValueError, match="'r' \\(ReLU\\), an activation layer"):
        uniq_tf.quantize_annotate_layer(L.ReLU(name="r"), weight_bits=2)
    with pytest.raises(ValueError, match="weight_bits of 'd' must be an integer in 1..16"):
        uniq_tf.quantize_annotate_layer(L.Dense(2, name="d"), weight_bits=32)
    with pytest.raises(ValueError, match="no annotated layer"):
        uniq_tf.quantize_apply(three_conv_model())
    with pytest.raises(TypeError, match="not a model"):
        uniq_tf.quantize_annotate_layer(three_conv_model())


class ScaledDense(keras.layers.Layer):
    """A custom kernel layer: y = relu(x @ w) * scale, reading self.w in call()."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1], self.units))
        self.scale = self.add_weight("scale", (), initializer="ones")

    def call(self, x):
        return tf.nn.relu(tf.matmul(x, self.w)) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.fixture
def registered():
    uniq_tf.register_layer(ScaledDense, {"w": -1}, quantize_output=True)
    yield
    uniq_tf.unregister_layer(ScaledDense)


def test_a_registered_custom_layer_is_quantized(registered, tmp_path):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(3, name="fc")(ScaledDense(5, name="custom")(inputs)))
    with uniq_tf.quantize_scope({"ScaledDense": ScaledDense}):
        quantized = uniq_tf.quantize_model(model, weight_bits=2, activation_bits=8)
    assert kernel_layers(quantized) == {"custom": 2, "fc": 2}
    assert activation_layers(quantized) == {"custom"}
    uniq_tf.set_weight_mode(quantized, Mode.QUANTIZED)
    uniq_tf.set_activation_mode(quantized, uniq_tf.ActMode.FLOAT)
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    book = uniq_tf.get_codebooks(quantized)["custom"]
    assert len(np.unique(book.dequantize())) <= 4
    hidden = np.maximum(x @ book.dequantize(), 0)  # the layer computed on its codebook values
    np.testing.assert_allclose(quantized.get_layer("custom")(x).numpy(), hidden, atol=1e-5)
    # Trains, and the per-channel axes given at registration are used.
    quantized.compile("adam", "mse")
    quantized.fit(x, np.zeros((8, 3), "float32"), epochs=1, verbose=0)
    with uniq_tf.quantize_scope({"ScaledDense": ScaledDense}):
        per_channel = uniq_tf.quantize_model(model, 2, 8, per_channel=True)
    assert uniq_tf.get_codebooks(per_channel)["custom"].levels.shape == (5, 4)


def test_register_layer_checks_its_arguments():
    with pytest.raises(TypeError, match="tf_keras Layer subclass"):
        uniq_tf.register_layer(int, {"kernel": -1})
    with pytest.raises(ValueError, match="at least one weight attribute"):
        uniq_tf.register_layer(ScaledDense, {})
    with pytest.raises(ValueError, match=r"kernel_attributes\['w'\]"):
        uniq_tf.register_layer(ScaledDense, {"w": "last"})
    with pytest.raises(ValueError, match=r"'custom' \(ScaledDense\)"):  # not registered
        uniq_tf.quantize_annotate_layer(ScaledDense(2, name="custom"))
