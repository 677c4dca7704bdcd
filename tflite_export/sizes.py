"""Size report: where a 2^b-level codebook saves bytes, and where it does not.

Rows, each raw and gzipped (level 9): the model's float32 weights (every weight of the
stripped model), the float and int8 TFLite files, and the packed file. The float32 weights of
a stripped model hold only 2^b distinct values per kernel, so they already gzip well; TFLite
stores at least 8 bits per weight; the packed file stores b bits per kernel weight, plus its
codebooks, the other weights in float32 and a header: its bytes on disk over b/32 of the
float32 weight bytes (``PackedReport.file_ratio``) say how close the whole file comes to b bits
per weight.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np

from tflite_export.packed import PackedReport
from uniq_tf import strip_quantization


@dataclass
class SizeRow:
    name: str
    raw_bytes: int
    gzip_bytes: int


@dataclass
class SizeReport:
    rows: list[SizeRow]
    packed: PackedReport

    @property
    def limit(self) -> float:
        """b / 32 (weight-count-weighted b where layers differ)."""
        return self.packed.kernel_bits / 32

    def summary(self) -> str:
        base = self.rows[0].raw_bytes
        lines = [f"{'':<26}{'bytes':>12}{'gzipped':>12}{'vs float32':>12}"]
        for row in self.rows:
            lines.append(
                f"{row.name:<26}{row.raw_bytes:>12,}{row.gzip_bytes:>12,}"
                f"{row.raw_bytes / base:>12.3f}"
            )
        p = self.packed
        lines.append(
            f"packed file: {p.file_bytes:,} bytes, {p.file_ratio:.3f}x b/32 of the float32 "
            f"weights (b/32 = {self.limit:.4f}): indices {p.index_bytes:,}, codebooks "
            f"{p.codebook_bytes:,}, other weights {p.other_bytes:,} bytes, the rest header"
        )
        return "\n".join(lines)


def _row(name: str, data: bytes) -> SizeRow:
    return SizeRow(name, len(data), len(gzip.compress(data, compresslevel=9)))


def _read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def size_report(
    model,
    packed: PackedReport,
    float_tflite: str | os.PathLike | None = None,
    int8_tflite: str | os.PathLike | None = None,
) -> SizeReport:
    """Sizes of ``model``'s float32 weights and of the files exported from it.

    Args:
        model: the quantized model the files were exported from.
        packed: the report of :func:`save_packed` for it.
        float_tflite: its float TFLite file, if any.
        int8_tflite: its int8 TFLite file, if any.

    Returns:
        A :class:`SizeReport`: raw and gzipped bytes of each, and ratios to float32.
    """
    weights = b"".join(
        np.asarray(w, dtype="<f4").tobytes() for w in strip_quantization(model).get_weights()
    )
    rows = [_row("float32 weights", weights)]
    if float_tflite is not None:
        rows.append(_row("TFLite float", _read(float_tflite)))
    if int8_tflite is not None:
        rows.append(_row("TFLite int8", _read(int8_tflite)))
    rows.append(_row("packed", _read(packed.path)))
    return SizeReport(rows, packed)
