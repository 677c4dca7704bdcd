"""The BOPs and MACs formulas of the UNIQ paper, as plain functions (docs/bops.md, "How the
numbers are counted"), and the multiply-accumulate stages of a built kernel layer.

An output element that sums ``f`` products of b_a-bit activations and b_w-bit weights costs
``f * (b_a * b_w + b_a + b_w + log2(f))`` BOPs; :mod:`uniq_tf.cost.bops` prices whole models
with these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from uniq_tf._keras import keras
from uniq_tf.cost.bitwidths import FLOAT_BITS
from uniq_tf.util import checks

L = keras.layers
FIXED_SHAPE_ADVICE = (
    "Build the model with a fixed input shape, e.g. keras.Input(shape=(224, 224, 3)) or "
    "keras.applications.MobileNet(input_shape=(224, 224, 3), weights=None); nested models "
    "need one too."
)


def check_bits(value, what: str) -> int:
    """``value`` as a bit width in 1..32, or a ValueError naming ``what``."""
    return checks.check_int(value, what, 1, FLOAT_BITS)


_positive_int = checks.check_positive_int


def accumulator_bits(fan_in: int, b_w: int, b_a: int) -> float:
    """b_o = b_a + b_w + log2(fan_in): the width of a sum of ``fan_in`` b_a x b_w products."""
    return b_a + b_w + math.log2(_positive_int(fan_in, "fan_in"))


def output_bops(fan_in: int, b_w: int, b_a: int) -> float:
    """BOPs of one output element: fan_in * (b_a b_w + b_o)."""
    return fan_in * (b_a * b_w + accumulator_bits(fan_in, b_w, b_a))


def conv_fan_in(n: int, k_h: int, k_w: int, groups: int = 1) -> int:
    """Products summed into one output of a conv with n input channels: n k_h k_w / groups."""
    n, groups = _positive_int(n, "n"), _positive_int(groups, "groups")
    if n % groups:
        raise ValueError(f"input channels n={n} are not divisible by groups={groups}")
    return n // groups * _positive_int(k_h, "k_h") * _positive_int(k_w, "k_w")


def conv_macs(m: int, n: int, k_h: int, k_w: int, out_positions: int, groups: int = 1) -> int:
    """Multiply-accumulates of a conv: m * (n / groups) * k_h * k_w * out_positions."""
    m, groups = _positive_int(m, "m"), _positive_int(groups, "groups")
    if m % groups:
        raise ValueError(f"output channels m={m} are not divisible by groups={groups}")
    return m * conv_fan_in(n, k_h, k_w, groups) * _positive_int(out_positions, "out_positions")


def conv_bops(
    m: int, n: int, k_h: int, k_w: int, b_w: int, b_a: int, out_positions: int, groups: int = 1
) -> float:
    """The paper's BOPs of a conv: m P f (b_a b_w + b_a + b_w + log2 f), f = n k_h k_w / groups.

    m output channels, n input channels, P = ``out_positions`` (output height x width, already
    reflecting strides, padding and dilation).
    """
    fan_in = conv_fan_in(n, k_h, k_w, groups)
    elements = conv_macs(m, n, k_h, k_w, out_positions, groups) // fan_in
    return elements * output_bops(fan_in, check_bits(b_w, "b_w"), check_bits(b_a, "b_a"))


def depthwise_macs(
    channels: int, k_h: int, k_w: int, out_positions: int, multiplier: int = 1
) -> int:
    """Depthwise conv: m = channels * multiplier outputs, each over k_h k_w inputs (n = 1)."""
    m = _positive_int(channels, "channels") * _positive_int(multiplier, "multiplier")
    return conv_macs(m, channels, k_h, k_w, out_positions, groups=channels)


def depthwise_bops(
    channels: int, k_h: int, k_w: int, b_w: int, b_a: int, out_positions: int,
    multiplier: int = 1,
) -> float:
    m = _positive_int(channels, "channels") * _positive_int(multiplier, "multiplier")
    return conv_bops(m, channels, k_h, k_w, b_w, b_a, out_positions, groups=channels)


def dense_macs(n_in: int, n_out: int, positions: int = 1) -> int:
    """Dense layer: n_in * n_out per position (a conv with k = 1)."""
    return conv_macs(n_out, n_in, 1, 1, positions)


def dense_bops(n_in: int, n_out: int, b_w: int, b_a: int, positions: int = 1) -> float:
    return conv_bops(n_out, n_in, 1, 1, b_w, b_a, positions)


def simple_bops(macs: int, b_w: int, b_a: int) -> int:
    """MACs * b_w * b_a, the count qonnx.util.inference_cost reports as total_bops."""
    return int(macs) * check_bits(b_w, "b_w") * check_bits(b_a, "b_a")


def conv_output_length(
    length: int, kernel: int, stride: int = 1, padding: str = "valid", dilation: int = 1
) -> int:
    """Output length of a conv/pool along one axis (Keras' padding semantics)."""
    length = _positive_int(length, "length")
    span = (_positive_int(kernel, "kernel") - 1) * _positive_int(dilation, "dilation") + 1
    stride = _positive_int(stride, "stride")
    if padding in ("same", "causal"):
        return -(-length // stride)
    if padding == "valid":
        return max(0, -(-(length - span + 1) // stride))
    raise ValueError(f"padding must be 'valid', 'same' or 'causal', got {padding!r}")


@dataclass(frozen=True)
class KernelOp:
    """One multiply-accumulate stage of a layer (SeparableConv2D has two): m * positions
    outputs, each a sum of (n / groups) k_h k_w products of b_a-bit and b_w-bit operands."""

    part: str
    m: int
    n: int
    k_h: int
    k_w: int
    groups: int
    positions: int
    b_w: int
    b_a: int

    @property
    def macs(self) -> int:
        return conv_macs(self.m, self.n, self.k_h, self.k_w, self.positions, self.groups)

    @property
    def bops(self) -> float:
        return conv_bops(
            self.m, self.n, self.k_h, self.k_w, self.b_w, self.b_a, self.positions, self.groups
        )

    @property
    def bops_simple(self) -> int:
        return simple_bops(self.macs, self.b_w, self.b_a)

    def to_dict(self) -> dict:
        return {
            "part": self.part, "m": self.m, "n": self.n, "k_h": self.k_h, "k_w": self.k_w,
            "groups": self.groups, "positions": self.positions, "weight_bits": self.b_w,
            "activation_bits": self.b_a, "macs": self.macs, "bops": self.bops,
            "bops_simple": self.bops_simple,
        }


def kernel_ops(
    layer, output_shape, weight_bits: Mapping[str, int], b_a: int, intermediate_bits: int
) -> list[KernelOp]:
    """The multiply-accumulate stages of a built Conv1D/Conv2D/DepthwiseConv2D/
    SeparableConv2D/Dense ``layer`` whose output has ``output_shape`` (batch axis first).

    ``weight_bits`` maps kernel attributes to b_w; ``b_a`` is the input's width and
    ``intermediate_bits`` the width of SeparableConv2D's depthwise output, which feeds its
    pointwise stage.
    """
    dims = list(output_shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has output shape "
            f"{tuple(output_shape)} with unknown dimensions, so its MACs and BOPs cannot be "
            f"counted. {FIXED_SHAPE_ADVICE}"
        )
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    positions = math.prod(dims[1:] if channels_first else dims[:-1])
    if isinstance(layer, L.SeparableConv2D):
        k_h, k_w, cin, mult = layer.depthwise_kernel.shape
        cout = layer.pointwise_kernel.shape[-1]
        return [
            KernelOp("depthwise_kernel", cin * mult, cin, k_h, k_w, cin, positions,
                     weight_bits["depthwise_kernel"], b_a),
            KernelOp("pointwise_kernel", cout, cin * mult, 1, 1, 1, positions,
                     weight_bits["pointwise_kernel"], intermediate_bits),
        ]
    if isinstance(layer, L.DepthwiseConv2D):
        k_h, k_w, cin, mult = layer.depthwise_kernel.shape
        return [KernelOp("depthwise_kernel", cin * mult, cin, k_h, k_w, cin, positions,
                         weight_bits["depthwise_kernel"], b_a)]
    if isinstance(layer, (L.Conv1D, L.Conv2D)):
        shape = tuple(layer.kernel.shape)  # (k_h, [k_w,] n / groups, m)
        k_h, k_w = shape[0], shape[1] if len(shape) == 4 else 1
        groups = getattr(layer, "groups", 1)
        return [KernelOp("kernel", shape[-1], shape[-2] * groups, k_h, k_w, groups, positions,
                         weight_bits["kernel"], b_a)]
    if isinstance(layer, L.Dense):
        n_in, n_out = layer.kernel.shape
        return [KernelOp("kernel", n_out, n_in, 1, 1, 1, math.prod(dims[:-1]),
                         weight_bits["kernel"], b_a)]
    raise TypeError(f"Layer {layer.name!r}: no BOPs formula for {type(layer).__name__}")


__all__ = [
    "check_bits",
    "accumulator_bits",
    "output_bops",
    "conv_fan_in",
    "conv_macs",
    "conv_bops",
    "depthwise_macs",
    "depthwise_bops",
    "dense_macs",
    "dense_bops",
    "simple_bops",
    "conv_output_length",
    "KernelOp",
    "kernel_ops",
]
