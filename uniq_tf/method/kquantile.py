"""The k-quantile quantizer and UNIQ's uniform noise: the method's math, written once.

Every user of the method (training, stripping, codebooks, exporters, BOPs) calls these
functions. Formulas (Baskin et al., UNIQ, ACM TOCS 2021; docs/method.md),
with F the fitted CDF of a weight tensor (per tensor, or per output channel):

    Gaussian:   mu = mean(w), sigma = std(w), F(w) = Phi((w - mu) / sigma)
    empirical:  F(w) = mid-rank of w among the tensor's weights / N
    k          = 2 ** bits
    u          = F(w)                                   (uniformization)
    bin        = clip(floor(u * k), 0, k - 1)
    level_i    = F^-1((i + 0.5) / k)                    (the bin's median)
    w_q        = level[bin]                             (hard quantization, exactly k values)
    e          ~ U[-s / (2k), +s / (2k)], s = 1 (s = 2 for the "high noise" variant)
    w_hat      = F^-1(clip(u + e, 1e-5, 1 - 1e-5))       (training-time noise, "paper")

Integer grid (``grid_bits=`` B >= b; FINN computes with B-bit integer weights, docs/method.md
"Integer grid"): each codebook row is replaced by its nearest B-bit grid

    N          = 2^(B-1) - 1
    n_i        = clip(round(level_i / s), -N, N)
    s          = max|level| / t, t the integer in [N // 2, N] (up to 4096 evenly spaced
                 candidates) minimizing max_i |s n_i - level_i|
    level_i   <- s n_i                                   (the snapped codebook)

Noise models (``noise=``; docs/method.md, "Noise models", has their error tables):

    "paper"        w_hat = F^-1(clip(u + e, 1e-5, 1 - 1e-5)): the paper and reference code
    "clipped"      w_hat = F^-1(clip(u + e, 1/(2k), 1 - 1/(2k))): the reference code's clip of
                   its activation noise, applied to the weights; a noisy weight never passes
                   the outer codebook levels, and its error matches the hard quantizer's
    "bin_matched"  w_hat = w + s * (level[bin] - F^-1((bin + r) / k)), r ~ U[0, 1): additive
                   noise drawn from the hard quantizer's own error distribution in the
                   weight's bin, so its error matches the quantizer's bin by bin

Statistics are taken under ``stop_gradient``: mu and sigma (and the empirical order) carry no
gradient; the caller gives the float weight an identity gradient.

Scale. The fit has no absolute floor: mu and sigma are computed on each row divided by its
largest |w| (a power of two, so the division is exact), and scaled back. So a row a * w gets
the codebook a * c(w) (and the same bins, noise and grid) for any a > 0 whose products float32
can hold, from about 1e-30 to 1e30; the paper's floor sigma >= 1e-5 would instead blow weights
of 1e-8 up a hundredfold. A constant row (every weight equal, or equal but for float32
rounding: a spread below 1e-6 of its largest |w|) gets sigma = 0 and is its own codebook: every
level equals the weight, every weight is in a middle bin (u = 1/2), and the noise is 0.

Tensors are handled as a (C, N) matrix: C rows of independent statistics (C = 1 per tensor,
C = output channels per channel), N weights per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import ndtri

from uniq_tf._keras import tf
from uniq_tf.method.settings import (
    BIN_MATCHED,
    CLIPPED,
    DEFAULTS,
    DISTRIBUTIONS,
    EMPIRICAL,
    GAUSSIAN,
    NOISE_MODELS,
    PAPER,
    check_distribution,
    check_noise,
)

U_CLIP = 1e-5
# A row whose spread is below this fraction of its largest |w| is constant in float32 terms
# (its deviations are a few ulps of rounding): it is its own codebook (module docstring).
CONSTANT_SPREAD = 1e-6
MAX_GRID_BITS = 16
_MAX_GRID_CANDIDATES = 4096
_SQRT2 = np.sqrt(2.0)


@cache
def standard_levels(bits: int) -> np.ndarray:
    """Phi^-1((i + 0.5) / k) for i = 0..k-1: the codebook of a standard normal (float64)."""
    k = 2**bits
    return ndtri((np.arange(k, dtype=np.float64) + 0.5) / k)


def _phi(z: tf.Tensor) -> tf.Tensor:
    return 0.5 * (1.0 + tf.math.erf(z / _SQRT2))


def _phi_inv(p: tf.Tensor) -> tf.Tensor:
    return _SQRT2 * tf.math.erfinv(2.0 * p - 1.0)


def to_rows(w: tf.Tensor, channel_axes: tuple[int, ...] | None) -> tuple[tf.Tensor, callable]:
    """Reshapes ``w`` to (C, N) with the channel axes first; returns it and the inverse map.

    ``channel_axes=None`` means one row (per-tensor statistics).
    """
    w = tf.convert_to_tensor(w)
    if not channel_axes:
        shape = tf.shape(w)
        return tf.reshape(w, [1, -1]), lambda rows: tf.reshape(rows, shape)
    rank = w.shape.rank
    axes = [a % rank for a in channel_axes]
    others = [a for a in range(rank) if a not in axes]
    perm = axes + others
    inverse = np.argsort(perm).tolist()
    moved = tf.transpose(w, perm)
    moved_shape = tf.shape(moved)
    channels = int(np.prod([w.shape[a] for a in axes]))
    rows = tf.reshape(moved, [channels, -1])
    return rows, lambda r: tf.transpose(tf.reshape(r, moved_shape), inverse)


@dataclass(frozen=True)
class RowStats:
    """What a fitted CDF needs: Gaussian (mu, sigma; sigma = 0 for a constant row) or the
    sorted weights of each row."""

    distribution: str
    mu: tf.Tensor | None = None
    sigma: tf.Tensor | None = None
    sorted_rows: tf.Tensor | None = None

    def standardize(self, rows: tf.Tensor) -> tf.Tensor:
        """z = (w - mu) / sigma of a Gaussian fit, 0 on constant rows."""
        spread = tf.where(self.sigma > 0, self.sigma, tf.ones_like(self.sigma))
        return (rows - self.mu) / spread


def _row_scale(rows: tf.Tensor) -> tf.Tensor:
    """The power of two nearest each row's largest |w| (1 for a row of zeros), (C, 1): the
    statistics are computed on rows / scale, which is exact and keeps squares in range."""
    top = tf.reduce_max(tf.abs(rows), axis=1, keepdims=True)
    exponent = tf.round(tf.math.log(tf.where(top > 0, top, tf.ones_like(top))) / np.log(2.0))
    return tf.pow(tf.constant(2.0, rows.dtype), exponent)


def fit(rows: tf.Tensor, distribution: str = DEFAULTS.distribution) -> RowStats:
    """Fits the CDF of each row of a (C, N) matrix; no gradient flows through the fit, and no
    absolute floor enters it (module docstring, "Scale")."""
    rows = tf.stop_gradient(rows)
    check_distribution(distribution)
    if distribution == GAUSSIAN:
        scale = _row_scale(rows)
        unit = rows / scale
        mu = tf.reduce_mean(unit, axis=1, keepdims=True)
        sigma = tf.sqrt(tf.reduce_mean(tf.square(unit - mu), axis=1, keepdims=True))
        constant = sigma <= CONSTANT_SPREAD
        mu = tf.where(constant, unit[:, :1], mu)
        sigma = tf.where(constant, tf.zeros_like(sigma), sigma)
        return RowStats(GAUSSIAN, mu=mu * scale, sigma=sigma * scale)
    return RowStats(EMPIRICAL, sorted_rows=tf.sort(rows, axis=1))


def uniformize(rows: tf.Tensor, stats: RowStats) -> tf.Tensor:
    """u = F(w), in [0, 1]."""
    if stats.distribution == GAUSSIAN:
        return _phi(stats.standardize(rows))
    s = stats.sorted_rows
    n = tf.cast(tf.shape(s)[1], rows.dtype)
    left = tf.cast(tf.searchsorted(s, rows, side="left"), rows.dtype)
    right = tf.cast(tf.searchsorted(s, rows, side="right"), rows.dtype)
    return (left + right) / (2.0 * n)


def inverse(p: tf.Tensor, stats: RowStats) -> tf.Tensor:
    """w = F^-1(p) for probabilities p of shape (C, M)."""
    if stats.distribution == GAUSSIAN:
        return stats.mu + stats.sigma * _phi_inv(p)
    s = stats.sorted_rows
    n = tf.shape(s)[1]
    pos = tf.clip_by_value(p * tf.cast(n, p.dtype) - 0.5, 0.0, tf.cast(n - 1, p.dtype))
    lo = tf.minimum(tf.cast(tf.floor(pos), tf.int32), n - 1)
    hi = tf.minimum(lo + 1, n - 1)
    frac = pos - tf.cast(lo, p.dtype)
    low = tf.gather(s, lo, batch_dims=1)
    high = tf.gather(s, hi, batch_dims=1)
    return low + frac * (high - low)


def levels(stats: RowStats, bits: int, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """The codebook of each row, (C, k), increasing: level_i = F^-1((i + 0.5) / k)."""
    if stats.distribution == GAUSSIAN:
        z = tf.constant(standard_levels(bits), dtype=dtype)[tf.newaxis, :]
        return stats.mu + stats.sigma * z
    k = 2**bits
    p = tf.constant((np.arange(k) + 0.5) / k, dtype=dtype)[tf.newaxis, :]
    rows = tf.shape(stats.sorted_rows)[0]
    return inverse(tf.tile(p, [rows, 1]), stats)


@cache
def grid_tops(grid_bits: int) -> np.ndarray:
    """The integers t the largest level may sit on: up to 4096 evenly spaced in [N // 2, N]."""
    big_n = 2 ** (grid_bits - 1) - 1
    count = min(_MAX_GRID_CANDIDATES, big_n)
    return np.unique(np.linspace(max(1, big_n // 2), big_n, count).round())


def snap_to_grid(codebook: tf.Tensor, grid_bits: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Snaps each row of a (C, k) codebook to its best B-bit integer grid (module docstring).

    Returns (values, scale, ints): values = scale[:, None] * ints, (C, k) in the codebook's
    dtype; scale (C,); ints (C, k), integers in [-N, N] stored in the codebook's dtype. A row
    of zeros gets scale 1 and ints 0.
    """
    codebook = tf.convert_to_tensor(codebook)
    big_n = float(2 ** (grid_bits - 1) - 1)
    tops = tf.constant(grid_tops(grid_bits), codebook.dtype)
    top = tf.reduce_max(tf.abs(codebook), axis=1, keepdims=True)
    scales = tf.where(top > 0, top, tf.ones_like(top)) / tops[tf.newaxis, :]  # (C, T)
    ints = tf.clip_by_value(
        tf.round(codebook[:, tf.newaxis, :] / scales[:, :, tf.newaxis]), -big_n, big_n)
    errors = tf.reduce_max(
        tf.abs(ints * scales[:, :, tf.newaxis] - codebook[:, tf.newaxis, :]), axis=2)
    best = tf.argmin(errors, axis=1, output_type=tf.int32)
    scale = tf.gather(scales, best, batch_dims=1)
    ints = tf.gather(ints, best, batch_dims=1)
    zero = top[:, 0] == 0
    scale = tf.where(zero, tf.ones_like(scale), scale)
    ints = tf.where(zero[:, tf.newaxis], tf.zeros_like(ints), ints)
    return ints * scale[:, tf.newaxis], scale, ints


def bin_index(u: tf.Tensor, bits: int) -> tf.Tensor:
    """bin = clip(floor(u * k), 0, k - 1), int32."""
    k = 2**bits
    return tf.clip_by_value(tf.cast(tf.floor(u * k), tf.int32), 0, k - 1)


def quantize_rows(
    rows: tf.Tensor, bits: int, distribution: str = DEFAULTS.distribution,
    grid_bits: int | None = None,
):
    """Hard k-quantile quantization of a (C, N) matrix.

    Returns (w_q, levels, indices) with w_q = levels[row, indices] exactly (w_q is gathered
    from the codebook, never recomputed), levels (C, k) and indices (C, N) int32. With
    ``grid_bits`` the levels are snapped to their B-bit grid (:func:`snap_to_grid`); the bins
    stay those of the unsnapped codebook.
    """
    stats = fit(rows, distribution)
    codebook = levels(stats, bits, rows.dtype)
    if grid_bits is not None:
        codebook = snap_to_grid(codebook, grid_bits)[0]
    indices = bin_index(uniformize(rows, stats), bits)
    return tf.gather(codebook, indices, batch_dims=1), codebook, indices


def _replica_seed() -> tf.Tensor:
    """A fresh stateless seed per call that differs between tf.distribute replicas.

    Stateful random ops with the same seeds draw the same numbers on every replica; the noise
    is meant to be independent per replica, so the replica id goes into the seed.
    """
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    base = tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
    return base + tf.stack([tf.cast(replica, tf.int64), tf.constant(0, tf.int64)])


def ranked(rows: tf.Tensor) -> tuple[RowStats, tf.Tensor]:
    """The empirical fit and u = (rank + 0.5) / N of each weight, from one argsort.

    For distinct weights u is exactly :func:`uniformize`'s mid-rank. Tied weights get
    consecutive ranks (in index order) instead of their shared mid-rank, so u stays inside
    the ties' span [left / N, right / N] and each row's u is exactly uniform. The noisy path
    uses this: two ``tf.searchsorted`` passes over every weight cost about 3x the argsort,
    and ties only need to land in their span there. The hard codebook keeps mid-ranks, so
    equal weights always share a level.
    """
    rows = tf.stop_gradient(rows)
    order = tf.argsort(rows, axis=1, stable=True)
    shape = tf.shape(rows)
    row_ids = tf.broadcast_to(tf.range(shape[0])[:, tf.newaxis], shape)
    positions = tf.broadcast_to(tf.range(shape[1])[tf.newaxis, :], shape)
    ranks = tf.scatter_nd(tf.stack([row_ids, order], axis=-1), positions, shape)
    n = tf.cast(shape[1], rows.dtype)
    u = (tf.cast(ranks, rows.dtype) + 0.5) / n
    return RowStats(EMPIRICAL, sorted_rows=tf.gather(rows, order, batch_dims=1)), u


def noisy_rows(
    rows: tf.Tensor,
    bits: int,
    distribution: str = DEFAULTS.distribution,
    noise_scale: float = 1.0,
    noise: str = DEFAULTS.noise,
) -> tf.Tensor:
    """UNIQ's noisy weights of a (C, N) matrix under the noise model ``noise`` (module doc);
    the default is the project's (``UniqSettings().noise``).

    "paper": w_hat = F^-1(clip(u + e, 1e-5, 1 - 1e-5)), e ~ U[+-s/(2k)].
    """
    check_noise(noise)
    k = 2**bits
    if distribution == EMPIRICAL:
        stats, u = ranked(rows)
    else:
        stats = fit(rows, distribution)
        u = uniformize(rows, stats)
    if noise == BIN_MATCHED:
        bins = bin_index(u, bits)
        r = tf.random.stateless_uniform(tf.shape(rows), _replica_seed(), dtype=rows.dtype)
        drawn = tf.clip_by_value((tf.cast(bins, rows.dtype) + r) / k, U_CLIP, 1.0 - U_CLIP)
        level = tf.gather(levels(stats, bits, rows.dtype), bins, batch_dims=1)
        return rows + noise_scale * (level - inverse(drawn, stats))
    half_width = noise_scale / (2.0 * k)
    e = tf.random.stateless_uniform(
        tf.shape(rows), _replica_seed(), -half_width, half_width, dtype=rows.dtype
    )
    low = U_CLIP if noise == PAPER else 0.5 / k
    return inverse(tf.clip_by_value(u + e, low, 1.0 - low), stats)


def quantize(
    w, bits: int, channel_axes=None, distribution: str = DEFAULTS.distribution,
    grid_bits: int | None = None,
) -> tf.Tensor:
    """Hard-quantizes a weight tensor of any shape (see :func:`quantize_rows`)."""
    rows, back = to_rows(w, channel_axes)
    return back(quantize_rows(rows, bits, distribution, grid_bits)[0])


def add_noise(
    w,
    bits: int,
    channel_axes=None,
    distribution: str = DEFAULTS.distribution,
    noise_scale: float = 1.0,
    noise: str = DEFAULTS.noise,
) -> tf.Tensor:
    """Noisy weight tensor of any shape (see :func:`noisy_rows`)."""
    rows, back = to_rows(w, channel_axes)
    return back(noisy_rows(rows, bits, distribution, noise_scale, noise))


def codebook(
    w, bits: int, channel_axes=None, distribution: str = DEFAULTS.distribution,
    grid_bits: int | None = None,
):
    """(levels, indices) of a weight tensor as numpy arrays.

    levels is (k,) per tensor or (C, k) per channel (snapped to the B-bit grid when
    ``grid_bits`` is given); indices has w's shape (int32) and holds each weight's bin. Per
    tensor, ``levels[indices]`` is the quantized tensor exactly.
    """
    rows, back = to_rows(w, channel_axes)
    _, levels_, indices = quantize_rows(rows, bits, distribution, grid_bits)
    indices = back(indices).numpy()
    levels_ = levels_.numpy()
    return (levels_[0] if not channel_axes else levels_), indices


__all__ = [
    "BIN_MATCHED", "CLIPPED", "CONSTANT_SPREAD", "DISTRIBUTIONS", "EMPIRICAL", "GAUSSIAN",
    "MAX_GRID_BITS", "NOISE_MODELS", "PAPER", "U_CLIP", "RowStats", "add_noise", "bin_index",
    "check_noise", "codebook", "fit", "grid_tops", "inverse", "levels", "noisy_rows",
    "quantize", "quantize_rows", "ranked", "snap_to_grid", "standard_levels", "to_rows",
    "uniformize",
]
