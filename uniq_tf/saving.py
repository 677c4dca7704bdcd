"""Loading a saved quantized model, with errors that say what to do (issue 17, item 10).

A quantized model holds TFMOT's QuantizeWrapperV2 layers and uniq_tf's quantizers: loading it
needs :func:`uniq_tf.quantize_scope`, and only the .h5 and SavedModel formats load back. The
.keras format saves without complaint but cannot be loaded ("expected 6 variables, but received
8"), so :func:`load_quantized` names the format instead of passing that error on.
"""

from __future__ import annotations

import os

from uniq_tf._keras import keras
from uniq_tf.quantize import quantize_scope

UNLOADABLE_SUFFIX = ".keras"


def load_quantized(path: str | os.PathLike):
    """The model saved at ``path`` (.h5 file or SavedModel directory), loaded inside
    :func:`uniq_tf.quantize_scope` without its optimizer state (``compile=False``)."""
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
