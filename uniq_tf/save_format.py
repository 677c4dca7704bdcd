"""The .keras-format check of quantized models (issue 17, item 10; uniq_tf.saving explains).

Here, below ``uniq_tf.quantize`` (which attaches the check to every model it makes) and
``uniq_tf.saving`` (which loads and saves), so that neither imports the other both ways.
"""

from __future__ import annotations

import functools
import os
import warnings

UNLOADABLE_SUFFIX = ".keras"
H5_SUFFIXES = (".h5", ".hdf5")
KERAS_FORMAT_WARNING = (
    "uniq_tf: a quantized model saved in the .keras format cannot be loaded back (TFMOT's "
    "QuantizeWrapperV2 does not restore from it); save it as .h5 or as a SavedModel directory "
    "and load it with uniq_tf.saving.load_quantized (keras.models.load_model inside "
    "uniq_tf.quantize_scope())."
)


def is_keras_format(filepath, save_format=None) -> bool:
    """True where tf_keras would write the .keras (v3) format: ``save_format`` "keras" or, when
    it is None, a path ending in ".keras"."""
    if save_format is not None:
        return str(save_format).lower() in ("keras", "keras_v3")
    try:
        return os.fspath(filepath).endswith(UNLOADABLE_SUFFIX)
    except TypeError:  # a file-like object
        return False


def warn_on_keras_format(model):
    """Makes ``model.save`` warn (:data:`KERAS_FORMAT_WARNING`) when it writes the .keras
    format; every format still saves as before. Returns ``model``."""
    if getattr(model.save, "_uniq_warns_on_keras_format", False):
        return model
    class_save = type(model).save

    @functools.wraps(class_save)
    def save(filepath, overwrite=True, save_format=None, **kwargs):
        if is_keras_format(filepath, save_format):
            warnings.warn(KERAS_FORMAT_WARNING, UserWarning, stacklevel=2)
        return class_save(model, filepath, overwrite=overwrite, save_format=save_format,
                          **kwargs)

    save._uniq_warns_on_keras_format = True
    model.save = save
    return model
