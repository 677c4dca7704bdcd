"""Uniform activation quantizers as QONNX ``Quant`` parameters.

TFMOT's MovingAverageQuantizer (asymmetric, wide range) computes at inference
``tf.quantization.fake_quant_with_min_max_vars(x, min, max, num_bits)``, which first nudges the
range so that 0 is exactly representable (TensorFlow's ``Nudge``, in float32):

    q_max = 2^bits - 1,   s = (max - min) / q_max,   z0 = -min / s
    z = 0 if z0 < 0, q_max if z0 > q_max, else round(z0)
    y = s * (floor(clip(x, -z s, (q_max - z) s) / s + z + 1/2) - z)

which is QONNX ``Quant(x, scale=s, zero_point=z, bitwidth=bits, signed=0, narrow=0)``:
``y = s * (round(clip(x / s + z, 0, q_max)) - z)``. The two differ only on exact ties
(TensorFlow rounds half up, QONNX half to even). FINN turns such a Quant node into
MultiThreshold when z = 0, which holds whenever min = 0 (a ReLU's range after
``uniq_tf.calibrate_activations``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuantParams:
    """A uniform quantizer: y = scale * (round(clip(x / scale + zero_point, lo, hi)) - zero_point)
    with [lo, hi] the integer range of ``bits`` (signed or not, narrow or not)."""

    scale: float
    zero_point: int
    bits: int
    signed: bool
    narrow: bool = False

    @property
    def max_value(self) -> float:
        """The largest representable output."""
        return float(np.float32(self.scale) * np.float32(self._q_max - self.zero_point))

    @property
    def min_value(self) -> float:
        return float(np.float32(self.scale) * np.float32(self._q_min - self.zero_point))

    @property
    def _q_min(self) -> int:
        return -(2 ** (self.bits - 1)) + int(self.narrow) if self.signed else 0

    @property
    def _q_max(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The quantizer's output on ``x`` (numpy, float32; ties round to even, as QONNX)."""
        scale = np.float32(self.scale)
        ints = np.clip(np.round(np.asarray(x, np.float32) / scale) + self.zero_point,
                       self._q_min, self._q_max)
        return ((ints - self.zero_point) * scale).astype(np.float32)


def from_fake_quant(min_value: float, max_value: float, bits: int) -> QuantParams:
    """The Quant equal to ``fake_quant_with_min_max_vars(min, max, bits)`` (module docstring)."""
    lo, hi = np.float32(min_value), np.float32(max_value)
    if not hi > lo:
        raise ValueError(f"activation range must have max > min, got [{min_value}, {max_value}]")
    q_max = np.float32(2**bits - 1)
    scale = (hi - lo) / q_max
    z0 = np.float32(0.0) - lo / scale
    if z0 < 0:
        zero_point = 0
    elif z0 > q_max:
        zero_point = int(q_max)
    else:
        zero_point = int(np.floor(z0 + np.float32(0.5)))
    return QuantParams(float(scale), zero_point, bits, signed=False)


def for_input(bits: int, scale: float | None = None, signed: bool = False) -> QuantParams:
    """The model input's quantizer, zero point 0 (which FINN requires): by default the scale
    that maps [0, 1] (unsigned) or [-1, 1] (signed) onto the full integer range."""
    if scale is None:
        scale = 1.0 / (2 ** (bits - 1) - 1 if signed else 2**bits - 1)
    return QuantParams(float(scale), 0, bits, signed=bool(signed))

