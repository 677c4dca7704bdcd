"""A quantized kernel as its codebook and indices, and the b-bit form those indices are stored in.

A kernel quantized with k = 2^b levels is fully described by its codebook (the levels, one row
per output channel with per-channel statistics) and one b-bit index per weight. The packed
index format is that description at b bits a weight:

    index i occupies bits [i*b, (i+1)*b) of the byte string (little-endian bit order),
    ceil(N * b / 8) bytes for N weights.

``uniq_tf.save_packed`` writes whole models in this format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uniq_tf._keras import tf
from uniq_tf.method import kquantile


@dataclass
class Codebook:
    """One quantized kernel: its codebook and every weight's index into it.

    layer, weight: the layer name and the kernel attribute ("kernel", "depthwise_kernel").
    bits: the index width b. levels: (k,) per tensor, or (C, k) per output channel (C = rows
    of the statistics). indices: int32, the kernel's shape, each weight's bin in 0..k-1.
    channel_axes: the kernel axes of the rows (None per tensor). distribution: the fitted CDF.
    grid_bits: the integer grid width B the levels are snapped to (the quantizer's
    ``grid_bits``), or None. Per tensor, ``levels[indices]`` equals the stripped kernel
    exactly; :meth:`dequantize` handles both cases.
    """

    layer: str
    weight: str
    bits: int
    levels: np.ndarray
    indices: np.ndarray
    channel_axes: tuple[int, ...] | None
    distribution: str
    grid_bits: int | None = None

    @property
    def size(self) -> int:
        """k = 2^b, the number of levels of each codebook row."""
        return 2**self.bits

    def dequantize(self) -> np.ndarray:
        """The quantized kernel: each weight's level, in the kernel's layout."""
        if self.levels.ndim == 1:
            return self.levels[self.indices]
        rows, back = kquantile.to_rows(tf.constant(self.indices), self.channel_axes)
        values = np.take_along_axis(self.levels, rows.numpy(), axis=1)
        return back(tf.constant(values)).numpy()

    def packed_indices(self) -> bytes:
        """The indices at b bits each (:func:`pack_indices`)."""
        return pack_indices(self.indices, self.bits)


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Packs non-negative integers < 2^bits into ceil(N * bits / 8) bytes (module docstring).

    Args:
        indices: integers in 0..2^bits - 1, any shape (flattened in C order).
        bits: bits per index, >= 1.

    Returns:
        The packed bytes.

    Raises:
        ValueError: an index outside 0..2^bits - 1.
    """
    flat = np.asarray(indices, dtype=np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"indices must be in 0..{2**bits - 1} for {bits} bits")
    bit_matrix = (flat[:, None] >> np.arange(bits)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_indices(data: bytes, bits: int, count: int) -> np.ndarray:
    """The inverse of :func:`pack_indices`.

    Args:
        data: bytes written by :func:`pack_indices`.
        bits: bits per index.
        count: how many indices the bytes hold.

    Returns:
        ``count`` int32 indices.
    """
    bit_values = np.unpackbits(
        np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little"
    )
    weights = (1 << np.arange(bits)).astype(np.int64)
    return (bit_values.reshape(count, bits).astype(np.int64) @ weights).astype(np.int32)


__all__ = ["Codebook", "pack_indices", "unpack_indices"]
