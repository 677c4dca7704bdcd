"""Saving and loading a quantized model, with messages that say what to do.

A quantized model holds TFMOT's QuantizeWrapperV2 layers and uniq_tf's quantizers: loading it
needs :func:`uniq_tf.quantize_scope` (without it Keras reports "Unknown layer:
'QuantizeWrapperV2'"), and only the .h5 and SavedModel formats load back. The .keras format
saves without complaint but cannot be loaded, with or without the scope ("Layer 'c1' expected
3 variables, but received 4"). So:

- ``model.save("m.keras")`` of any model holding uniq_tf's quantizers warns while it writes
  (:data:`KERAS_FORMAT_WARNING`; the warning comes from the quantizers' configs, so it holds
  for clones and loaded models too);
- :func:`save_quantized` saves as .h5 or SavedModel and refuses .keras;
- :func:`load_quantized` loads inside the scope and names the format when given a .keras file.
"""

from __future__ import annotations

import os
import warnings

from uniq_tf._keras import keras
from uniq_tf.integration.configs import KERAS_FORMAT_WARNING, quantize_scope

UNLOADABLE_SUFFIX = ".keras"
H5_SUFFIXES = (".h5", ".hdf5")


def is_keras_format(filepath, save_format=None) -> bool:
    """True where tf_keras would write the .keras (v3) format: ``save_format`` "keras" or, when
    it is None, a path ending in ".keras".

    Args:
        filepath: the path given to ``save`` (a file-like object is not the .keras format).
        save_format: the ``save_format`` given to ``save``, or None.

    Returns:
        Whether that save writes the .keras format.
    """
    if save_format is not None:
        return str(save_format).lower() in ("keras", "keras_v3")
    try:
        return os.fspath(filepath).endswith(UNLOADABLE_SUFFIX)
    except TypeError:  # a file-like object
        return False


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
        model.save(path, overwrite=overwrite, save_format=save_format)


def load_quantized(path: str | os.PathLike):
    """Loads a model saved by ``model.save`` or :func:`save_quantized`.

    Args:
        path: a .h5 file or a SavedModel directory.

    Returns:
        The model, loaded inside :func:`uniq_tf.quantize_scope` without its optimizer state
        (``compile=False``).

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
            return keras.models.load_model(path, compile=False)
    except (ValueError, TypeError) as error:
        if not path.endswith(UNLOADABLE_SUFFIX):
            raise
        raise ValueError(
            f"{path!r} is in the .keras format, which cannot load a quantized model back "
            f"(TFMOT's QuantizeWrapperV2: {error}). Save quantized models as .h5 "
            "(model.save('model.h5')) or as a SavedModel directory."
        ) from error


__all__ = ["H5_SUFFIXES", "KERAS_FORMAT_WARNING", "UNLOADABLE_SUFFIX", "is_keras_format",
           "load_quantized", "quantize_scope", "save_quantized"]
