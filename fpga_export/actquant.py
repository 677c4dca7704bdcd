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


DEFAULT_INPUT_BITS = 8


def _top(bits: int, signed: bool) -> int:
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


def for_range(lo: float, hi: float, bits: int = DEFAULT_INPUT_BITS,
              signed: bool | None = None) -> QuantParams:
    """The input quantizer, zero point 0 (which FINN requires), whose range holds [lo, hi]:
    signed when lo < 0 (unless ``signed`` says), scale = max(|lo|, |hi|) / q_max."""
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"the input range must be finite with lo <= hi, got [{lo}, {hi}]")
    if signed is None:
        signed = lo < 0
    if lo < 0 and not signed:
        raise ValueError(f"the input range [{lo:g}, {hi:g}] has negative values, so its "
                         "quantizer must be signed (input_signed=True or None)")
    top = max(abs(lo), abs(hi))
    scale = (top if top > 0 else 1.0) / _top(bits, signed)
    return QuantParams(float(scale), 0, bits, signed=bool(signed))


def input_quantizer(
    data_range: tuple[float, float] | None = None,
    input_range: tuple[float, float] | None = None,
    bits: int | None = None,
    scale: float | None = None,
    signed: bool | None = None,
) -> tuple[QuantParams, str]:
    """The bundle's input quantizer and how it was found: stated (``input_range``, or
    ``scale`` with ``bits`` and ``signed``), else from the data's range (``data_range``, the
    min and max of representative inputs). Data must lie inside a stated range.

    Raises:
        ValueError: neither data nor a stated range (FINN needs an integer input and uniq_tf
            does not guess its range); a range and a scale both given; data outside the
            stated range (naming both).
    """
    bits = DEFAULT_INPUT_BITS if bits is None else bits
    if input_range is not None and scale is not None:
        raise ValueError("give the input's range either as input_range=(lo, hi) or as "
                         "input_scale (with input_bits, input_signed), not both")
    if input_range is not None:
        params = for_range(*input_range, bits, signed)
        how = f"stated: input_range=[{input_range[0]:g}, {input_range[1]:g}]"
    elif scale is not None:
        params = QuantParams(float(scale), 0, bits, signed=bool(signed))
        how = f"stated: input_scale={scale:g}, input_bits={bits}, input_signed={bool(signed)}"
    elif data_range is not None:
        params = for_range(*data_range, bits, signed)
        return params, f"from the data's range [{data_range[0]:g}, {data_range[1]:g}]"
    else:
        raise ValueError(
            "the FPGA bundle quantizes the model input to integers, so it needs the input's "
            "range: pass data=... (representative inputs: the range is taken from them), or "
            "input_range=(lo, hi), or input_bits/input_scale/input_signed. (The digits of "
            "uniq_tf.data are pixel counts 0..16 / 16: input_bits=5, input_scale=1/16.)")
    if data_range is not None:
        slack = params.scale / 2
        if data_range[0] < params.min_value - slack or data_range[1] > params.max_value + slack:
            raise ValueError(
                f"the data lie in [{data_range[0]:g}, {data_range[1]:g}], outside the stated "
                f"input range [{params.min_value:g}, {params.max_value:g}] ({how}); state a "
                "range that holds the data, or pass the data alone")
    return params, how

