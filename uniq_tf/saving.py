"""Saving and loading a quantized model, with messages that say what to do (issue 17, item 10).

A quantized model holds TFMOT's QuantizeWrapperV2 layers and uniq_tf's quantizers: loading it
needs :func:`uniq_tf.quantize_scope` (without it Keras reports "Unknown layer:
'QuantizeWrapperV2'"), and only the .h5 and SavedModel formats load back. The .keras format
saves without complaint but cannot be loaded, with or without the scope ("Layer 'c1' expected
3 variables, but received 4"). So:

- ``model.save("m.keras")`` on a model made by :func:`uniq_tf.quantize_model` (or loaded by
  :func:`load_quantized`) warns at save time (:func:`warn_on_keras_format` installs the check
  on the model instance; ``keras.models.save_model`` called directly is not covered);
- :func:`save_quantized` saves as .h5 or SavedModel and refuses .keras;
- :func:`load_quantized` loads inside the scope and names the format when given a .keras file.
"""

from __future__ import annotations

import os
import warnings

from uniq_tf._keras import keras
from uniq_tf.quantize import is_quantized_model, quantize_scope

# The save-format check lives below quantize.py (which attaches it to the models it makes);
# its names are part of this module's interface.
from uniq_tf.save_format import (
    H5_SUFFIXES,
    KERAS_FORMAT_WARNING,
    UNLOADABLE_SUFFIX,
    is_keras_format,
    warn_on_keras_format,
)

__all__ = ["H5_SUFFIXES", "KERAS_FORMAT_WARNING", "UNLOADABLE_SUFFIX", "is_keras_format",
           "load_quantized", "save_quantized", "warn_on_keras_format"]


def save_quantized(model, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Saves a quantized ``model`` where :func:`load_quantized` can load it back.

    Args:
        model: a quantized model.
        path: a file ending in .h5 or .hdf5 (HDF5), else a SavedModel directory.
        overwrite: replace what is at ``path``.

    Raises:
        ValueError: ``path`` ends in .keras (the format cannot load a quantized model back).
    """
    path = os.fspath(path)
    if is_keras_format(path):
        raise ValueError(
            f"{path!r}: a quantized model cannot be loaded back from the .keras format (TFMOT's "
            "QuantizeWrapperV2); give a path ending in .h5 or a SavedModel directory."
        )
    save_format = "h5" if path.lower().endswith(H5_SUFFIXES) else "tf"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are saving your model as an HDF5 file")
        type(model).save(model, path, overwrite=overwrite, save_format=save_format)


def load_quantized(path: str | os.PathLike):
    """Loads a model saved by ``model.save`` or :func:`save_quantized`.

    Args:
        path: a .h5 file or a SavedModel directory.

    Returns:
        The model, loaded inside :func:`uniq_tf.quantize_scope` without its optimizer state
        (``compile=False``); a quantized model's ``save`` warns about the .keras format
        (:func:`warn_on_keras_format`).

    Raises:
        FileNotFoundError: nothing is at ``path``.
        ValueError: ``path`` is a .keras file (which cannot hold a quantized model), or Keras
            could not load it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved model at {path!r}.")
    try:
        with quantize_scope():
            model = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError) as error:
        if not path.endswith(UNLOADABLE_SUFFIX):
            raise
        raise ValueError(
            f"{path!r} is in the .keras format, which cannot load a quantized model back "
            f"(TFMOT's QuantizeWrapperV2: {error}). Save quantized models as .h5 "
            "(model.save('model.h5')) or as a SavedModel directory."
        ) from error
    return warn_on_keras_format(model) if is_quantized_model(model) else model
