"""Shared fixtures. uniq_tf is imported first so TF_USE_LEGACY_KERAS=1 is set before TF loads."""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import uniq_tf  # noqa: E402,F401
from uniq_tf._keras import keras, tf  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.backend.clear_session()
    tf.random.set_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits (1,797 8x8 images): (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te
