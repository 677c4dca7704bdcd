"""The packed b-bit codebook format (``uniq_tf.save_packed``) with the exporters' errors.

The format lives beside the codebook in uniq_tf (``uniq_tf.integration.packed``); here it is
written with the same path checks and errors as the TFLite files (:mod:`tflite_export.errors`).
"""

from __future__ import annotations

import os

from tflite_export._atomic import check_output_path
from tflite_export.errors import VerificationError
from uniq_tf.integration import packed
from uniq_tf.integration.packed import PackedReport, load_packed


def save_packed(model, path: str | os.PathLike) -> PackedReport:
    """``uniq_tf.save_packed`` with the exporters' errors.

    Args:
        model: a quantized model (or a ``uniq_tf.QuantizedModel``).
        path: the file to write (atomically).

    Returns:
        The :class:`uniq_tf.integration.packed.PackedReport` of the file.

    Raises:
        ValueError: ``model`` has no quantized layer.
        ExportPathError: ``path`` cannot be written (nothing is written).
        VerificationError: the file does not give the stripped model back bit for bit.
    """
    check_output_path(path)
    try:
        return packed.save_packed(model, path)
    except packed.PackedFileError as error:
        raise VerificationError(str(error)) from error


__all__ = ["PackedReport", "load_packed", "save_packed"]
