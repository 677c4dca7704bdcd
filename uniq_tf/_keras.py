"""The Keras 2 guard: TFMOT 0.8 works only with tf_keras (Keras 2).

Importing this module sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow loads, when the
variable is unset, so that ``tf.keras`` and TFMOT both resolve to tf_keras; a value the user
set is kept (TFMOT overwrites it while it is imported; it is put back afterwards), and so is
``TF_CPP_MIN_LOG_LEVEL`` (default 2 here). uniq_tf itself always works with tf_keras
(``uniq_tf.keras``), whatever ``tf.keras`` is. :func:`require_keras2_model` rejects Keras 3
objects at the public API with a message a user can act on, and importing uniq_tf after
Keras 3 became ``tf.keras`` warns once.
"""

from __future__ import annotations

import os
import sys
import warnings

_USER_LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization  # noqa: E402, F401  (sets TF_USE_LEGACY_KERAS=1 itself)
import tf_keras as keras  # noqa: E402

if _USER_LEGACY_KERAS is not None:
    os.environ["TF_USE_LEGACY_KERAS"] = _USER_LEGACY_KERAS

_KERAS3_ADVICE = (
    "uniq_tf needs Keras 2 models (the tf_keras package), because TFMOT 0.8 does not work "
    "with Keras 3. Build the model with `import tf_keras as keras`, or set the environment "
    "variable TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported (importing uniq_tf "
    "first does that) so that tf.keras is Keras 2."
)


def _tf_keras_is_keras3() -> bool:
    version_fn = getattr(tf.keras, "version", None)
    return bool(version_fn and version_fn().startswith("3."))


if "keras" in sys.modules and _tf_keras_is_keras3():
    warnings.warn(
        "TensorFlow was imported with Keras 3 active before uniq_tf; models built with "
        "tf.keras in this process are Keras 3 models and will be rejected. " + _KERAS3_ADVICE,
        stacklevel=2,
    )


def require_keras2_model(model: object, argument: str = "model") -> keras.Model:
    """Returns ``model`` if it is a tf_keras Model, else raises a TypeError that says why."""
    if isinstance(model, keras.Model):
        return model
    module = type(model).__module__ or ""
    if module.split(".")[0] == "keras":
        raise TypeError(
            f"`{argument}` is a Keras 3 object ({type(model).__module__}."
            f"{type(model).__name__}). " + _KERAS3_ADVICE
        )
    raise TypeError(
        f"`{argument}` must be a tf_keras.Model (Sequential or Functional); "
        f"got {type(model).__name__}."
    )


__all__ = ["keras", "tf", "require_keras2_model"]
