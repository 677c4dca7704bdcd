"""Layer type -> how UNIQ quantizes it. Swap this module's table to cover more layer types.

Kernel layers: Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Dense. Their kernels get the
k-quantile quantizer; ``KERNEL_CHANNEL_AXES`` names the kernel axes that index output channels
(for per-channel statistics). Activation layers: ReLU and Activation (except linear and softmax)
get an output quantizer. Layers without weights that only route or reshape values (Add,
Concatenate, pooling, Flatten, Reshape, Dropout, ...) need nothing, and BatchNormalization stays
float by design. Any other layer holding weights is left in float and named in a warning.
"""

from __future__ import annotations

from uniq_tf._keras import keras

L = keras.layers

# Order matters: SeparableConv2D and DepthwiseConv2D subclass Conv2D in tf_keras.
KERNEL_CHANNEL_AXES: dict[type, dict[str, tuple[int, ...]]] = {
    L.SeparableConv2D: {"depthwise_kernel": (2, 3), "pointwise_kernel": (-1,)},
    L.DepthwiseConv2D: {"depthwise_kernel": (2, 3)},
    L.Conv1D: {"kernel": (-1,)},
    L.Conv2D: {"kernel": (-1,)},
    L.Dense: {"kernel": (-1,)},
}
UNSUPPORTED_KERNEL_TYPES = (L.Conv2DTranspose, L.Conv3D, L.Conv1DTranspose, L.SeparableConv1D)
_NOT_QUANTIZED_ACTIVATIONS = ("linear", "softmax", None)


def kernel_attributes(layer) -> dict[str, tuple[int, ...]] | None:
    """The quantizable kernel attributes of ``layer`` and their channel axes, or None."""
    if isinstance(layer, UNSUPPORTED_KERNEL_TYPES):
        return None
    for layer_type, attrs in KERNEL_CHANNEL_AXES.items():
        if isinstance(layer, layer_type):
            return attrs
    return None


def activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", str(activation))


def has_quantized_output(layer) -> bool:
    """True where the layer's output is an activation we quantize."""
    if isinstance(layer, L.ReLU):
        return True
    if isinstance(layer, L.Activation) or kernel_attributes(layer) is not None:
        return activation_name(layer) not in _NOT_QUANTIZED_ACTIVATIONS
    return False


_NON_NEGATIVE_ACTIVATIONS = ("relu", "relu6")


def has_non_negative_output(layer) -> bool:
    """True where the layer's quantized output is a ReLU's (never below 0)."""
    if isinstance(layer, L.ReLU):
        slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        return slope == 0.0 and float(getattr(layer, "threshold", 0.0) or 0.0) >= 0.0
    return activation_name(layer) in _NON_NEGATIVE_ACTIVATIONS


def is_activation_layer(layer) -> bool:
    return isinstance(layer, (L.ReLU, L.Activation)) and has_quantized_output(layer)
