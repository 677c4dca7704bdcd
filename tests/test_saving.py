"""Saving quantized models: ``save`` warns about the .keras format (which cannot load it back),
``save_quantized`` refuses it, ``load_quantized`` names it, and .h5/SavedModel round trips (of
nested models and split SeparableConv2D layers too) are bit identical."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from test_quantize import batch, nested_model, residual_model, save_and_load, small_cnn
from test_tflite_checks import _inputs, mlp

import uniq_tf
from uniq_tf import Mode
from uniq_tf._keras import keras
from uniq_tf.integration.saving import (
    KERAS_FORMAT_WARNING,
    is_keras_format,
    load_quantized,
    save_quantized,
)

L = keras.layers
pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")


def keras_format_warnings(record) -> list:
    return [w for w in record if str(w.message) == KERAS_FORMAT_WARNING]


def test_saving_a_quantized_model_as_keras_warns_and_loading_names_the_format(tmp_path):
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=3)
    with pytest.warns(UserWarning) as record:
        q.save(tmp_path / "m.keras")
    assert len(keras_format_warnings(record)) == 1
    assert "\n" not in KERAS_FORMAT_WARNING
    assert "load_quantized" in KERAS_FORMAT_WARNING and ".h5" in KERAS_FORMAT_WARNING
    assert record[0].filename == __file__  # points at the caller's save line
    assert (tmp_path / "m.keras").exists()  # it still saves, as before
    with pytest.warns(UserWarning, match="cannot be loaded back"):
        q.save(str(tmp_path / "other.keras"), save_format="keras")
    with pytest.raises(ValueError, match=r"\.keras format, which cannot load .* as \.h5"):
        load_quantized(tmp_path / "m.keras")


@pytest.mark.parametrize("name", ["m.h5", "m_savedmodel"])
def test_h5_and_savedmodel_saves_do_not_warn_and_load_back(tmp_path, name):
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=3)
    uniq_tf.calibrate_activations(q, [batch(16, 1)], verbose=False)
    x = batch(4, 2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        q.save(tmp_path / name)
    assert not keras_format_warnings(record)
    loaded = load_quantized(tmp_path / name)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(),
                                  q(x, training=False).numpy())
    # the loaded model warns too
    with pytest.warns(UserWarning, match="cannot be loaded back"):
        loaded.save(tmp_path / "again.keras")


@pytest.mark.parametrize("name", ["m.h5", "m.hdf5", "m_savedmodel"])
def test_save_quantized_round_trip(tmp_path, name):
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=2)
    x = batch(4, 2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        save_quantized(q, tmp_path / name)
    assert not record, [str(w.message) for w in record]
    loaded = load_quantized(tmp_path / name)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(),
                                  q(x, training=False).numpy())
    assert (tmp_path / name).is_dir() == (name == "m_savedmodel")


def test_save_quantized_refuses_the_keras_format(tmp_path):
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=2)
    with pytest.raises(ValueError, match=r"cannot be loaded back from the \.keras format"):
        save_quantized(q, tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_float_models_are_left_alone(tmp_path):
    model = small_cnn()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.save(tmp_path / "float.keras")
    assert not keras_format_warnings(record)
    assert "save" not in vars(model)
    loaded = load_quantized(tmp_path / "float.keras")
    assert "save" not in vars(loaded)
    assert isinstance(loaded, keras.Model)


def test_is_keras_format():
    assert is_keras_format("a/m.keras") and is_keras_format(Path("m.keras"))
    assert is_keras_format("m", "keras") and not is_keras_format("m.keras", "h5")
    assert not is_keras_format("m.h5") and not is_keras_format("dir")


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_load_quantized_names_the_keras_format(tmp_path):
    from uniq_tf.integration.saving import load_quantized

    quantized = uniq_tf.quantize_model(mlp())
    x = _inputs(4)
    quantized.save(tmp_path / "m.h5")
    loaded = load_quantized(tmp_path / "m.h5")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), quantized.predict(x, verbose=0))
    quantized.save(tmp_path / "m.keras")  # saves; tf_keras cannot load it back
    with pytest.raises(ValueError, match=r"\.keras format, which cannot load .* as \.h5"):
        load_quantized(tmp_path / "m.keras")
    with pytest.raises(FileNotFoundError, match="No saved model"):
        load_quantized(tmp_path / "missing.h5")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5", "tf"])
@pytest.mark.parametrize("build, layer, mode", [
    (residual_model, "stem", Mode.QUANTIZED), (nested_model, "dw", Mode.FLOAT)])
def test_save_and_load_is_bit_identical(tmp_path, fmt, build, layer, mode):
    q = uniq_tf.quantize_model(build(), weight_bits=3, activation_bits=4)
    uniq_tf.calibrate_activations(q, [batch(32, 1)], verbose=False)
    uniq_tf.set_weight_mode(q, mode, layers=[layer])
    x = batch(8, 2)
    expected = q(x, training=False).numpy()
    loaded = save_and_load(q, tmp_path, fmt)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    assert uniq_tf.weight_modes(loaded) == uniq_tf.weight_modes(q)
    assert uniq_tf.weight_modes(loaded)[layer] == mode


def separable_model():
    inp = keras.Input((8, 8, 1))
    x = L.SeparableConv2D(4, 3, activation="relu", name="sep")(inp)
    return keras.Model(inp, L.Dense(3, name="fc")(L.Flatten()(x)))


@pytest.mark.parametrize("fmt", ["h5", "tf"])
def test_separable_conv_save_and_load_is_bit_identical(tmp_path, fmt):
    """A quantized SeparableConv2D is split in two wrapped layers (integration.layout), which the
    SavedModel format saves; a wrapped SeparableConv2D failed with a ValueError there."""
    q = uniq_tf.quantize_model(separable_model(), weight_bits=2)
    uniq_tf.calibrate_activations(q, [batch(8, 1)], verbose=False)
    x = batch(4, 3)
    expected = q(x, training=False).numpy()
    loaded = save_and_load(q, tmp_path, fmt)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    assert sorted(uniq_tf.get_codebooks(loaded)) == ["fc", "sep", "sep_depthwise"]
    for key, codebook in uniq_tf.get_codebooks(q).items():
        np.testing.assert_array_equal(uniq_tf.get_codebooks(loaded)[key].levels, codebook.levels)
    assert uniq_tf.get_activation_ranges(loaded) == uniq_tf.get_activation_ranges(q)
