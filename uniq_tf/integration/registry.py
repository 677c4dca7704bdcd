"""Layer type -> how UNIQ quantizes it; :func:`register_layer` adds a layer type of your own.

Kernel layers: Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Dense. Their kernels get the
k-quantile quantizer; ``KERNEL_CHANNEL_AXES`` names the kernel axes that index output channels
(for per-channel statistics). Activation layers: ReLU and Activation (except linear and softmax)
get an output quantizer. Layers without weights that only route or reshape values (Add,
Concatenate, pooling, Flatten, Reshape, Dropout, ...) need nothing, and BatchNormalization stays
float by design. Any other layer holding weights is left in float and named in a warning.

Which layers carry a bit width (:func:`keeps_bit_width`): a layer whose output is on the same
integer grid as its input in a deployed network (normalization and rescaling folded into the
producer or the thresholds, routing, pooling and padding, a ReLU). BOPs (``uniq_tf.summary``)
and the FPGA descriptor both read this one definition to find the width b_a a kernel layer
multiplies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from uniq_tf._keras import keras
from uniq_tf.util import checks

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

# Layers whose output carries the bit width of their input (module docstring).
PASS_THROUGH_TYPES: tuple[type, ...] = (
    L.BatchNormalization, L.Rescaling, L.Normalization,
    L.Dropout, L.GaussianNoise, L.GaussianDropout,
    L.Flatten, L.Reshape, L.Permute,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
    L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Concatenate,
)
# An un-quantized ReLU keeps its input's grid; other non-linearities leave it.
_GRID_KEEPING_ACTIVATIONS = ("linear", "relu")


# Layer types registered by users (register_layer): looked up before the built-in table.
_REGISTERED: dict[type, tuple[dict[str, tuple[int, ...]], bool | None]] = {}


def register_layer(
    layer_type: type,
    kernel_attributes: Mapping[str, int | Sequence[int]],
    quantize_output: bool | None = None,
) -> None:
    """Lets UNIQ quantize a layer type of your own (or change how a built-in one is quantized).

    The layer must read each named weight from ``self.<attribute>`` in ``call`` (TFMOT's wrapper
    sets the attribute to the quantized weight before each call), as Keras' own layers do.
    Registration applies to models quantized afterwards; loading a saved model with the type
    needs it in ``uniq_tf.quantize_scope({"MyLayer": MyLayer})``. The exporters (TFLite,
    FINN) know the built-in layer types only.

    Args:
        layer_type: a tf_keras ``Layer`` subclass.
        kernel_attributes: weight attribute -> the axes of that weight that index output
            channels (for per-channel codebooks), e.g. ``{"kernel": -1}``.
        quantize_output: quantize the layer's output activation; None: when its ``activation``
            is a non-linear function other than softmax (as for Dense and Conv2D).

    Raises:
        TypeError: ``layer_type`` is not a tf_keras Layer subclass.
        ValueError: ``kernel_attributes`` is empty or an axis is not an integer.
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, L.Layer)) or issubclass(
            layer_type, keras.Model):
        raise TypeError(
            f"register_layer takes a tf_keras Layer subclass (built with uniq_tf.keras), got "
            f"{layer_type!r}."
        )
    if not isinstance(kernel_attributes, Mapping) or not kernel_attributes:
        raise ValueError(
            f"kernel_attributes of {layer_type.__name__} must map at least one weight attribute "
            f"to its output-channel axes, e.g. {{'kernel': -1}}; got {kernel_attributes!r}."
        )
    checked = {}
    for attr, axes in kernel_attributes.items():
        axes = (axes,) if checks.is_integer(axes) else tuple(axes)
        if not isinstance(attr, str) or not axes or not all(checks.is_integer(a) for a in axes):
            raise ValueError(
                f"kernel_attributes[{attr!r}] of {layer_type.__name__} must be an axis or a "
                f"tuple of axes (integers), got {kernel_attributes[attr]!r}."
            )
        checked[attr] = tuple(int(a) for a in axes)
    if quantize_output is not None and not isinstance(quantize_output, bool):
        raise ValueError(f"quantize_output must be True, False or None, got {quantize_output!r}")
    _REGISTERED[layer_type] = (checked, quantize_output)


def unregister_layer(layer_type: type) -> None:
    """Undoes :func:`register_layer`.

    Args:
        layer_type: a layer type given to :func:`register_layer`.

    Raises:
        KeyError: ``layer_type`` was not registered.
    """
    del _REGISTERED[layer_type]


def kernel_layer_types() -> list[type]:
    """The kernel layer types UNIQ quantizes: registered ones first, then the built-in ones."""
    return [*_REGISTERED, *KERNEL_CHANNEL_AXES]


def _registered(layer):
    for layer_type in type(layer).__mro__:
        if layer_type in _REGISTERED:
            return _REGISTERED[layer_type]
    return None


def kernel_attributes(layer) -> dict[str, tuple[int, ...]] | None:
    """The quantizable kernel attributes of ``layer`` and their channel axes, or None."""
    registered = _registered(layer)
    if registered is not None:
        return registered[0]
    if isinstance(layer, UNSUPPORTED_KERNEL_TYPES):
        return None
    for layer_type, attrs in KERNEL_CHANNEL_AXES.items():
        if isinstance(layer, layer_type):
            return attrs
    return None


def activation_name(layer) -> str | None:
    """The name of ``layer``'s (fused) activation function, or None."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", str(activation))


def has_quantized_output(layer) -> bool:
    """True where the layer's output is an activation we quantize."""
    if isinstance(layer, L.ReLU):
        return True
    registered = _registered(layer)
    if registered is not None and registered[1] is not None:
        return registered[1]
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
    """True for a ReLU or Activation layer whose output UNIQ quantizes."""
    return isinstance(layer, (L.ReLU, L.Activation)) and has_quantized_output(layer)


def is_quantizable(layer) -> bool:
    """True for the layers UNIQ can quantize: kernel layers and activation layers."""
    return kernel_attributes(layer) is not None or is_activation_layer(layer)


def keeps_bit_width(layer) -> bool:
    """True where ``layer``'s output is on its input's integer grid (module docstring)."""
    if isinstance(layer, PASS_THROUGH_TYPES):
        return True
    if isinstance(layer, L.ReLU):
        return float(layer.negative_slope) == 0.0
    if isinstance(layer, L.Activation):
        return activation_name(layer) in _GRID_KEEPING_ACTIVATIONS
    return False


def channel_axes(layer, attr: str) -> tuple[int, ...]:
    """The output-channel axes of ``layer``'s kernel ``attr`` (as registered), checked against
    the built kernel.

    Raises:
        ValueError: an axis outside the kernel's rank (a registered type's axes that do not
            fit its kernel), naming the layer, the kernel's shape and the axis.
    """
    shape = tuple(getattr(layer, attr).shape)
    out = []
    for axis in kernel_attributes(layer)[attr]:
        if not -len(shape) <= axis < len(shape):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}): its kernel {attr!r} has shape "
                f"{shape}, so output-channel axis {axis} is outside its rank {len(shape)}; "
                f"register the type with axes in {-len(shape)}..{len(shape) - 1}."
            )
        out.append(axis)
    return tuple(out)
