"""Which layer gets which UNIQ config: the plan every apply path makes, in one place.

The plan reads the annotated layers of a float model (layer name -> its ``LayerBits`` or None)
and the model-wide :class:`uniq_tf.UniqSettings`:

- an annotated kernel layer gets the k-quantile quantizer on each kernel (its own weight bits,
  else the settings'), and an output quantizer when it has a fused non-linear activation;
- an annotated activation layer (ReLU, Activation) gets an output quantizer at its own
  activation bits, else those of the last quantized kernel layer before it, else the
  settings'; an activation layer that is not annotated follows the kernel layer before it:
  quantized when that layer is annotated (or when there is none), float otherwise;
- every other layer stays float; layers of other types that hold weights are named in a
  warning (batch norm stays float by design).

``quantize_model(model, layer_bits=..., skip_layers=...)`` annotates every layer UNIQ can
quantize except ``skip_layers``, with ``layer_bits`` as the annotations' bits
(:func:`annotations_for`); ``quantize_apply`` and ``UniqScheme`` read the annotations a user
made. All three then call :func:`plan`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import tensorflow_model_optimization as tfmot

from uniq_tf._keras import keras
from uniq_tf.integration import registry
from uniq_tf.integration.configs import ActivationQuantizeConfig, KernelQuantizeConfig, LayerBits
from uniq_tf.method.quantizers import KQuantileWeightQuantizer
from uniq_tf.method.settings import UniqSettings, check_activation_bits, check_weight_bits
from uniq_tf.util import graph

QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapperV2


def check_float_model(model, where: str | None = None) -> None:
    """The checks every apply path makes before planning: a built Sequential or Functional
    model (nested ones too), not quantized already, with finite weights.

    Raises:
        ValueError: naming the problem (and the layers with NaN or inf weights).
    """
    graph.check_graph_model(model, where)
    if any(isinstance(layer, QuantizeWrapper) for layer in graph.layers(model)):
        raise ValueError(
            f"Model {model.name!r} is already quantized (it holds QuantizeWrapperV2 layers); "
            "quantize the float model once, or keep training this one."
        )
    graph.check_finite_weights(model)


def _kernel_types() -> str:
    return ", ".join(t.__name__ for t in registry.kernel_layer_types())


def _check_override_target(layer, pair) -> None:
    """A bit override must name a layer whose bits it can set (else it would do nothing)."""
    kind = type(layer).__name__
    if registry.kernel_attributes(layer) is not None:
        return
    if registry.is_activation_layer(layer):
        if pair[0] is not None:
            raise ValueError(
                f"layer_bits[{layer.name!r}] sets weight bits {pair[0]}, but {layer.name!r} is an "
                f"activation layer ({kind}) without weights; use (None, activation_bits)."
            )
        return
    raise ValueError(
        f"layer_bits names {layer.name!r} ({kind}), which UNIQ does not quantize; it applies to "
        f"kernel layers ({_kernel_types()}) and to ReLU/Activation layers (activation bits only)."
    )


def check_layer_overrides(
    model, layer_bits: Mapping | None, skip_layers: Iterable[str] | str
) -> tuple[dict[str, tuple[int | None, int | None]], set[str]]:
    """``layer_bits`` and ``skip_layers`` of ``quantize_model``, checked against the layers of
    ``model``: ({name: (weight_bits or None, activation_bits or None)}, {skipped names})."""
    layer_bits = dict(layer_bits or {})
    skip_layers = {skip_layers} if isinstance(skip_layers, str) else set(skip_layers)
    by_name = {layer.name: layer for layer in graph.layers(model)}
    unknown = sorted((set(layer_bits) | skip_layers) - set(by_name))
    if unknown:
        raise ValueError(
            f"Unknown layer names {unknown} in layer_bits/skip_layers of model {model.name!r}. "
            f"Layers are: {list(by_name)}"
        )
    checked = {}
    for name, pair in layer_bits.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"layer_bits[{name!r}] must be a pair (weight_bits, activation_bits), got {pair!r}"
            )
        _check_override_target(by_name[name], pair)
        w, a = pair
        checked[name] = (
            None if w is None else check_weight_bits(w, f"layer_bits[{name!r}][0]"),
            None if a is None else check_activation_bits(a, f"layer_bits[{name!r}][1]"),
        )
    return checked, skip_layers


def annotations_for(
    model, layer_bits: Mapping | None = None, skip_layers: Iterable[str] | str = ()
) -> dict[str, LayerBits | None]:
    """The annotations ``quantize_model`` applies: every layer UNIQ can quantize except
    ``skip_layers``, with the bits of ``layer_bits`` (checked: unknown names and layers whose
    bits cannot be set are errors)."""
    checked, skip = check_layer_overrides(model, layer_bits, skip_layers)
    return {
        layer.name: LayerBits(*checked[layer.name]) if layer.name in checked else None
        for layer in graph.layers(model)
        if registry.is_quantizable(layer) and layer.name not in skip
    }


def check_annotations(annotations: Mapping) -> None:
    """ValueError unless every annotation is UNIQ's (``LayerBits``) or None."""
    for name, bits in annotations.items():
        if bits is not None and not isinstance(bits, LayerBits):
            raise ValueError(
                f"layer {name!r} is annotated with a {type(bits).__name__}; UNIQ annotations "
                "carry bit widths only (uniq_tf.quantize_annotate_layer(layer, weight_bits=..., "
                "activation_bits=...))."
            )


def _kernel_config(layer, bits: LayerBits | None, settings: UniqSettings) -> KernelQuantizeConfig:
    weight_bits = settings.weight_bits
    if bits is not None and bits.weight_bits is not None:
        weight_bits = bits.weight_bits
    quantizers = {}
    for attr in registry.kernel_attributes(layer):
        axes = registry.channel_axes(layer, attr)  # checked whether used or not
        quantizers[attr] = KQuantileWeightQuantizer(
            weight_bits, axes if settings.per_channel else None, settings.distribution,
            settings.noise_scale, noise=settings.noise)
    output_bits = None
    if registry.has_quantized_output(layer):
        output_bits = _activation_bits(bits, settings.activation_bits)
    return KernelQuantizeConfig(quantizers, output_bits, owner=layer.name)


def _activation_bits(bits: LayerBits | None, default: int) -> int:
    return default if bits is None or bits.activation_bits is None else bits.activation_bits


def plan(model, annotations: Mapping[str, LayerBits | None],
         settings: UniqSettings) -> dict:
    """Layer name -> QuantizeConfig for the annotated layers of ``model`` (module docstring),
    in forward order.

    Args:
        model: the float model (annotation wrappers removed).
        annotations: the annotated layers' names -> their ``LayerBits`` or None.
        settings: the model-wide settings.

    Returns:
        The plan; layers without an entry stay float.

    Raises:
        ValueError: an annotation that is not UNIQ's, or a registered layer type whose
            channel axes do not fit its kernel.
    """
    check_annotations(annotations)
    configs: dict = {}
    owner, owner_bits = None, settings.activation_bits
    follows = True  # an activation layer before any kernel layer is quantized
    not_quantized = []
    for layer in graph.layers(model):
        bits = annotations.get(layer.name)
        if registry.kernel_attributes(layer) is not None:
            follows = layer.name in annotations
            if follows:
                configs[layer.name] = _kernel_config(layer, bits, settings)
                owner = layer.name
                owner_bits = _activation_bits(bits, settings.activation_bits)
        elif registry.is_activation_layer(layer):
            if layer.name in annotations or follows:
                configs[layer.name] = ActivationQuantizeConfig(
                    _activation_bits(bits, owner_bits), owner=owner)
        elif layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
            not_quantized.append(f"{layer.name} ({type(layer).__name__})")
    if not_quantized:
        warnings.warn(
            "uniq_tf leaves these layers in float (no UNIQ config for their type): "
            + ", ".join(not_quantized),
            stacklevel=3,
        )
    return configs


def has_kernel(configs: Mapping) -> bool:
    """True when the plan quantizes at least one kernel."""
    return any(isinstance(c, KernelQuantizeConfig) for c in configs.values())


def no_kernel_error(model) -> ValueError:
    """The error of a plan that quantizes no kernel."""
    return ValueError(
        f"Model {model.name!r} has no layer UNIQ can quantize (supported: {_kernel_types()}), "
        "after skip_layers (or among the annotated layers)."
    )


__all__ = ["annotations_for", "check_annotations", "check_float_model",
           "check_layer_overrides", "has_kernel", "no_kernel_error", "plan"]
