"""Reading a quantized model: its wrappers, codebooks, activation ranges and stripped float graph.

:class:`QuantizedModel` is one reading of a quantized model, checked once (a tf_keras model,
quantized by UNIQ, finite weights): what the exporters, BOPs and allocation read. The functions
below (``get_codebooks``, ``get_activation_ranges``, ``strip_quantization``, ...) are the same
readings one at a time.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow_model_optimization as tfmot

from uniq_tf import internals
from uniq_tf._keras import require_keras2_model, tf
from uniq_tf.integration.configs import (
    ActivationQuantizeConfig,
    KernelQuantizeConfig,
    quantize_scope,
)
from uniq_tf.method import kquantile
from uniq_tf.method.codebook import Codebook
from uniq_tf.method.quantizers import KQuantileWeightQuantizer, SwitchableActivationQuantizer
from uniq_tf.util import graph

QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapperV2


def wrappers(model) -> list:
    """The QuantizeWrapperV2 layers of a quantized model, in forward order (nested included)."""
    return [layer for layer in graph.layers(model) if isinstance(layer, QuantizeWrapper)]


def is_uniq_wrapper(wrapper) -> bool:
    """True for a wrapper uniq_tf made (a kernel or activation config of ours)."""
    return isinstance(wrapper.quantize_config, (KernelQuantizeConfig, ActivationQuantizeConfig))


def kernel_wrappers(model) -> list:
    """The wrappers of quantized kernel layers, in forward order."""
    return [w for w in wrappers(model) if isinstance(w.quantize_config, KernelQuantizeConfig)]


def weight_quantizers(wrapper) -> list[tuple[str, KQuantileWeightQuantizer, dict]]:
    """(attribute, quantizer, its variables) for each quantized kernel of ``wrapper``."""
    config = wrapper.quantize_config
    if not isinstance(config, KernelQuantizeConfig):
        return []
    return [
        (attr, quantizer, variables)
        for attr, (_, quantizer, variables) in zip(
            config.weight_quantizers, internals.wrapper_weight_vars(wrapper), strict=False)
    ]


def output_quantizers(wrapper) -> list[tuple[SwitchableActivationQuantizer, dict]]:
    """(quantizer, its variables) of ``wrapper``'s output; TFMOT supports at most one."""
    quantizers = internals.wrapper_output_quantizers(wrapper)
    if not quantizers or not isinstance(quantizers[0], SwitchableActivationQuantizer):
        return []
    return [(quantizers[0], internals.wrapper_output_quantizer_vars(wrapper))]


def float_kernel(wrapper, attr: str = "kernel") -> tf.Variable:
    """The float variable behind a quantized kernel attribute (``wrapper.layer.<attr>`` holds the
    quantized tensor of the last call instead)."""
    names = wrapper.quantize_config.weight_quantizers
    for (variable, _, _), name in zip(internals.wrapper_weight_vars(wrapper), names, strict=True):
        if name == attr:
            return variable
    raise KeyError(f"layer {wrapper.layer.name!r} has no quantized weight {attr!r}")


def is_quantized_model(model) -> bool:
    """True when ``model`` holds at least one UNIQ-quantized kernel layer.

    Args:
        model: a tf_keras model.

    Returns:
        Whether ``uniq_tf.quantize_model`` (or ``quantize_apply``) made it.
    """
    return bool(kernel_wrappers(model))


def codebook_key(wrapper, attr: str) -> str:
    """The key of a kernel's codebook: the layer name, or "layer/attribute" for a layer with two
    quantized kernels (a wrapped SeparableConv2D of a model saved before they were split)."""
    if attr == "kernel" or len(wrapper.quantize_config.weight_quantizers) == 1:
        return wrapper.layer.name
    return f"{wrapper.layer.name}/{attr}"


def _codebooks(kernels: list) -> dict[str, Codebook]:
    out = {}
    for wrapper in kernels:
        for attr, quantizer, _ in weight_quantizers(wrapper):
            levels, indices = kquantile.codebook(
                float_kernel(wrapper, attr), quantizer.bits, quantizer.channel_axes,
                quantizer.distribution, quantizer.grid_bits,
            )
            out[codebook_key(wrapper, attr)] = Codebook(
                wrapper.layer.name, attr, quantizer.bits, levels, indices.astype(np.int32),
                quantizer.channel_axes, quantizer.distribution, quantizer.grid_bits,
            )
    return out


def _ranges(found: list) -> dict[str, tuple[float, float, int]]:
    return {
        wrapper.layer.name: (float(variables["min_var"].numpy()),
                             float(variables["max_var"].numpy()), quantizer.bits)
        for wrapper in found for quantizer, variables in output_quantizers(wrapper)
    }


def get_codebooks(model) -> dict[str, Codebook]:
    """The codebook of every quantized kernel, computed from its float weights.

    Args:
        model: a quantized model.

    Returns:
        Key -> :class:`uniq_tf.Codebook` (levels and every weight's index), in forward order.
        The key is the layer name, or "layer/attribute" for a layer with two quantized kernels
        (a wrapped SeparableConv2D of a model saved before uniq_tf split them).

    Raises:
        TypeError: ``model`` is not a tf_keras model.
        ValueError: a quantized kernel holds NaN or inf (the error names the layer).
    """
    model = require_keras2_model(model)
    graph.check_finite_weights(model)
    return _codebooks(kernel_wrappers(model))


def get_activation_ranges(model) -> dict[str, tuple[float, float, int]]:
    """The ranges the activation quantizers learned (or were calibrated to).

    Args:
        model: a quantized model.

    Returns:
        Layer name -> (min, max, bits) of its activation quantizer.
    """
    return _ranges(wrappers(model))


def strip_quantization(model):
    """The deployable float model: hard quantization, whatever mode the layers were in.

    Args:
        model: a quantized model (or a :class:`QuantizedModel`).

    Returns:
        A plain tf_keras model with the same layer names whose quantized kernels hold exactly
        their codebook values, activations in float, and every other weight copied. The base
        of every exporter.

    Raises:
        ValueError: ``model`` has no quantized layer, or a quantized kernel holds NaN or inf.
    """
    return inspect_quantized(model).stripped


def _strip(model, codebooks: dict[str, Codebook]):
    def unwrap(layer):
        inner = layer.layer if isinstance(layer, QuantizeWrapper) else layer
        return inner.__class__.from_config(inner.get_config())

    with quantize_scope():
        stripped = graph.clone(model, unwrap)
    # clone_model keeps the order of the layers, nested models' too.
    for source, target in zip(graph.layers(model), graph.layers(stripped), strict=True):
        if not isinstance(source, QuantizeWrapper):
            target.set_weights(source.get_weights())
            continue
        kernels = {attr: codebooks[codebook_key(source, attr)].dequantize()
                   for attr, _, _ in weight_quantizers(source)}
        target.set_weights([
            kernels[name] if name in kernels else getattr(source.layer, name).numpy()
            for name in map(graph.weight_name, target.weights)
        ])
    return stripped


class QuantizedModel:
    """One reading of a model made by ``uniq_tf.quantize_model`` (or ``quantize_apply``),
    checked once: what exporters, BOPs and allocation read.

    It reads the model as it is when a property is first asked for (codebooks, ranges and the
    stripped model are computed once and kept); read the model again after training it.

    Args:
        model: a quantized tf_keras model.

    Raises:
        TypeError: ``model`` is not a tf_keras model (a Keras 3 model gets advice).
        ValueError: it holds no UNIQ-quantized layer, or a weight is NaN or inf (naming the
            layers).
    """

    def __init__(self, model):
        model = require_keras2_model(model)
        self.model = model
        self.wrappers = wrappers(model)
        self.kernel_wrappers = [w for w in self.wrappers
                                if isinstance(w.quantize_config, KernelQuantizeConfig)]
        if not self.kernel_wrappers:
            raise ValueError(f"Model {model.name!r} has no UNIQ-quantized layer; call "
                             "uniq_tf.quantize_model first.")
        graph.check_finite_weights(model)

    @property
    def name(self) -> str:
        return self.model.name

    @functools.cached_property
    def codebooks(self) -> dict[str, Codebook]:
        """Key -> :class:`uniq_tf.Codebook` (see :func:`get_codebooks`)."""
        return _codebooks(self.kernel_wrappers)

    @functools.cached_property
    def activation_ranges(self) -> dict[str, tuple[float, float, int]]:
        """Layer name -> (min, max, bits) of its activation quantizer."""
        return _ranges(self.wrappers)

    @functools.cached_property
    def configs(self) -> dict[str, object]:
        """Wrapper name -> its QuantizeConfig (the bit widths BOPs read)."""
        return {w.name: w.quantize_config for w in self.wrappers}

    @functools.cached_property
    def stripped(self):
        """The deployable float model (see :func:`strip_quantization`)."""
        return _strip(self.model, self.codebooks)

    def weight_modes(self) -> dict[str, int]:
        """Layer name -> the current mode of its (first) weight quantizer."""
        return {w.layer.name: int(weight_quantizers(w)[0][2]["mode"].numpy())
                for w in self.kernel_wrappers}

    def activation_modes(self) -> dict[str, int]:
        """Layer name -> the current mode of its output quantizer."""
        return {w.layer.name: int(variables["act_mode"].numpy())
                for w in self.wrappers for _, variables in output_quantizers(w)}


def inspect_quantized(model) -> QuantizedModel:
    """One checked reading of a quantized model (a :class:`QuantizedModel` is returned as is).

    Args:
        model: a model made by ``uniq_tf.quantize_model`` or ``quantize_apply``.

    Returns:
        A :class:`QuantizedModel`.

    Raises:
        TypeError: ``model`` is not a tf_keras model.
        ValueError: it holds no UNIQ-quantized layer, or a weight is NaN or inf.
    """
    return model if isinstance(model, QuantizedModel) else QuantizedModel(model)


__all__ = ["QuantizeWrapper", "QuantizedModel", "codebook_key", "float_kernel",
           "get_activation_ranges", "get_codebooks", "inspect_quantized", "is_quantized_model",
           "is_uniq_wrapper", "kernel_wrappers", "output_quantizers", "strip_quantization",
           "weight_quantizers", "wrappers"]
