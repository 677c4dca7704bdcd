"""Snapping a k-quantile codebook onto the signed integer grid FINN computes with.

FINN has no look-up-table weights: a layer's weights must be integers of some width B times a
scale. A UNIQ codebook row (k = 2^b non-uniform levels l_0 < ... < l_{k-1}) is represented as

    l_i ~= s * n_i,   n_i = clip(round(l_i / s), -N, N),   N = 2^(B-1) - 1

(QONNX ``Quant`` with zero point 0, signed, narrow range). The error of the row is
``max_i |s n_i - l_i|``; the row is represented *within tolerance* when that error is at most
``tolerance`` times the smallest gap between adjacent levels (default 1%). For a width B the
scale is searched among ``s = max|l| / n`` (n <= N, so the largest level sits exactly on the
grid); the chosen B is the smallest B >= max(b, 2) whose best scale meets the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID_TOLERANCE = 0.01
MAX_GRID_BITS = 16
_MAX_CANDIDATES = 4096


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


def _best_scale(row: np.ndarray, bits: int) -> tuple[float, np.ndarray, float]:
    """(s, n, error) minimizing max |s n - l| over s = max|l| / n_top, n_top <= N."""
    top = float(np.abs(row).max())
    big_n = 2 ** (bits - 1) - 1
    if top == 0.0:
        return 1.0, np.zeros(row.shape, np.int64), 0.0
    tops = np.unique(np.linspace(max(1, big_n // 2), big_n, min(_MAX_CANDIDATES, big_n)).round())
    scales = top / tops
    ints = np.clip(np.round(row[None, :] / scales[:, None]), -big_n, big_n)
    errors = np.abs(ints * scales[:, None] - row[None, :]).max(axis=1)
    best = int(np.argmin(errors))
    return float(scales[best]), ints[best].astype(np.int64), float(errors[best])


def snap_rows(levels: np.ndarray, bits: int) -> IntegerGrid:
    """Snaps every row of ``levels`` (C, k) to a B-bit grid with its own best scale."""
    levels = np.asarray(levels, np.float64)
    fits = [_best_scale(row, bits) for row in levels]
    error = np.array([f[2] for f in fits])
    gap = min_gap(levels)
    relative = np.divide(error, gap, out=np.where(error > 0, np.inf, 0.0), where=gap > 0)
    return IntegerGrid(
        bits=bits,
        scale=np.array([f[0] for f in fits], np.float64),
        levels=np.stack([f[1] for f in fits]),
        error=error,
        relative_error=relative,
    )


def snap_codebook(
    levels: np.ndarray,
    index_bits: int,
    tolerance: float = GRID_TOLERANCE,
    bits: int | None = None,
) -> IntegerGrid:
    """The grid of a codebook: of width ``bits`` if given, else the smallest width >=
    max(index_bits, 2) that represents every row within ``tolerance`` (module docstring).

    ``levels``: (k,) per tensor or (C, k) per channel. Raises ValueError when no width up to
    MAX_GRID_BITS meets the tolerance.
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
