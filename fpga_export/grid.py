"""Snapping a k-quantile codebook onto the signed integer grid FINN computes with.

FINN has no look-up-table weights: a layer's weights must be integers of some width B times a
scale. A UNIQ codebook row (k = 2^b non-uniform levels l_0 < ... < l_{k-1}) is represented as

    l_i ~= s * n_i,   n_i = clip(round(l_i / s), -N, N),   N = 2^(B-1) - 1

(QONNX ``Quant`` with zero point 0, signed, narrow range). The error of the row is
``max_i |s n_i - l_i|``; the row is represented *within tolerance* when that error is at most
``tolerance`` times the smallest gap between adjacent levels (default 1%). For a width B the
scale is searched among ``s = max|l| / n`` (n <= N, so the largest level sits exactly on the
grid); the chosen B is the smallest B >= max(b, 2) whose best scale meets the tolerance.
The snapping itself is ``uniq_tf.method.kquantile.snap_to_grid``, the function grid-aware training
uses too (``KQuantileWeightQuantizer(grid_bits=B)``, ``uniq_tf.set_grid_bits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uniq_tf._keras import tf
from uniq_tf.method import kquantile

GRID_TOLERANCE = 0.01
MAX_GRID_BITS = kquantile.MAX_GRID_BITS
_MAX_CHUNK_ELEMENTS = 2**22


@dataclass(frozen=True)
class IntegerGrid:
    """One codebook on the grid.

    bits: B. scale: (C,) one scale per codebook row (C = 1 for a per-tensor codebook).
    levels: (C, k) int64, n_i of each level. error: (C,) max |s n_i - l_i| per row.
    relative_error: (C,) error / smallest level gap of the row.
    """

    bits: int
    scale: np.ndarray
    levels: np.ndarray
    error: np.ndarray
    relative_error: np.ndarray

    @property
    def max_int(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def values(self) -> np.ndarray:
        """The grid-snapped levels s * n_i, (C, k) float32."""
        return (self.levels * self.scale[:, None]).astype(np.float32)


def min_gap(levels: np.ndarray) -> np.ndarray:
    """Smallest positive gap between adjacent sorted levels of each row, (C,)."""
    diffs = np.diff(np.sort(levels, axis=1), axis=1)
    diffs = np.where(diffs > 0, diffs, np.inf)
    gap = diffs.min(axis=1) if diffs.shape[1] else np.full(levels.shape[0], np.inf)
    return np.where(np.isfinite(gap), gap, 0.0)


def snap_rows(levels: np.ndarray, bits: int) -> IntegerGrid:
    """Snaps every row of ``levels`` (C, k) to a B-bit grid with its own best scale
    (``uniq_tf.method.kquantile.snap_to_grid``, in float64; rows in chunks to bound memory)."""
    levels = np.asarray(levels, np.float64)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // (len(kquantile.grid_tops(bits)) * levels.shape[1]))
    parts = [kquantile.snap_to_grid(tf.constant(levels[i:i + chunk]), bits)
             for i in range(0, len(levels), chunk)]
    values = np.concatenate([p[0].numpy() for p in parts])
    error = np.abs(values - levels).max(axis=1)
    gap = min_gap(levels)
    relative = np.divide(error, gap, out=np.where(error > 0, np.inf, 0.0), where=gap > 0)
    return IntegerGrid(
        bits=bits,
        scale=np.concatenate([p[1].numpy() for p in parts]),
        levels=np.concatenate([p[2].numpy() for p in parts]).astype(np.int64),
        error=error,
        relative_error=relative,
    )


def snap_codebook(
    levels: np.ndarray,
    index_bits: int,
    tolerance: float = GRID_TOLERANCE,
    bits: int | None = None,
) -> IntegerGrid:
    """The integer grid a codebook is exported on (module docstring).

    Args:
        levels: the codebook, (k,) per tensor or (C, k) per channel.
        index_bits: the codebook's index width b.
        tolerance: the largest error allowed, relative to each row's smallest level gap.
        bits: a fixed grid width; None chooses the smallest width >= max(b, 2) within
            ``tolerance``.

    Returns:
        An :class:`IntegerGrid`: per row, the scale and the integer codes of the levels, and the
        relative error of the snapped levels.

    Raises:
        ValueError: no width up to MAX_GRID_BITS meets the tolerance.
    """
    rows = np.atleast_2d(np.asarray(levels, np.float64))
    if bits is not None:
        return snap_rows(rows, bits)
    for width in range(max(index_bits, 2), MAX_GRID_BITS + 1):
        grid = snap_rows(rows, width)
        if np.all(grid.relative_error <= tolerance):
            return grid
    raise ValueError(
        f"no integer grid of up to {MAX_GRID_BITS} bits represents this {index_bits}-bit "
        f"codebook within {tolerance:.2%} of its smallest level gap (best relative error "
        f"{grid.relative_error.max():.2%}); pass weight_grid_bits or a larger grid_tolerance"
    )
