"""The errors tflite_export raises; catch :class:`ExportError` for all of them."""


class ExportError(Exception):
    """Base class: an export did not produce a verified file (nothing was written or replaced)."""


class ExportPathError(ExportError):
    """The output path cannot be written (missing directory, a directory, no permission)."""


class ConversionError(ExportError):
    """The TFLite converter rejected the model; the message names the layers involved."""


class VerificationError(ExportError):
    """The written file failed its checks against the Keras model; the old file is untouched."""
