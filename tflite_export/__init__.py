"""TFLite export of UNIQ models, verified in LiteRT, and a packed b-bit codebook format.

- :func:`export_tflite`: stripped float, dynamic-range or full-integer int8 TFLite files,
  written atomically after a check in the LiteRT interpreter;
- :func:`save_packed` / :func:`load_packed`: b-bit indices + codebooks, bit-exact round trip;
- :func:`size_report`: float32 weights vs TFLite vs packed, raw and gzipped;
- :func:`predict`: run a TFLite file on float inputs (int8 inputs/outputs handled).
"""

import uniq_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tflite_export.errors import ConversionError, ExportError, ExportPathError, VerificationError
from tflite_export.export import ExportReport, export_tflite
from tflite_export.kernels import KernelCheck, check_kernels
from tflite_export.packed import PackedReport, load_packed, save_packed
from tflite_export.runtime import RUNTIME, predict
from tflite_export.sizes import SizeReport, size_report

__all__ = [
    "RUNTIME",
    "ConversionError",
    "ExportError",
    "ExportPathError",
    "ExportReport",
    "KernelCheck",
    "PackedReport",
    "SizeReport",
    "VerificationError",
    "check_kernels",
    "export_tflite",
    "load_packed",
    "predict",
    "save_packed",
    "size_report",
]
