"""Issue 17 item 10: a quantized model's ``save`` warns about the .keras format (which cannot
load it back), ``save_quantized`` refuses it, and .h5/SavedModel round trips through
``load_quantized`` are bit identical."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import uniq_tf
from uniq_tf._keras import keras
from uniq_tf.integration.saving import (
    KERAS_FORMAT_WARNING,
    is_keras_format,
    load_quantized,
    save_quantized,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_quantize import batch, small_cnn  # noqa: E402

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
