"""Quantize part of a model, the TFMOT way: annotate layers, then apply.

    annotated = keras.Model(inputs, ...)                      # build with annotations, or
    annotated = uniq_tf.quantize_annotate_model(model)       # annotate every layer UNIQ handles
    conv = uniq_tf.quantize_annotate_layer(keras.layers.Conv2D(8, 3), weight_bits=2)
    quantized = uniq_tf.quantize_apply(annotated, weight_bits=4, activation_bits=8)

or with TFMOT's own entry point and UNIQ's scheme:

    quantized = tfmot.quantization.keras.quantize_apply(
        annotated, scheme=uniq_tf.UniqScheme(weight_bits=4, activation_bits=8))

Annotations are TFMOT's ``QuantizeAnnotate`` wrappers. The layers UNIQ quantizes are the
annotated kernel layers (Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, and types
added with :func:`uniq_tf.register_layer`) and activation layers (ReLU, Activation). A ReLU or
Activation that is not annotated follows the kernel layer before it, as in
:func:`uniq_tf.quantize_model`: quantized when that layer is annotated, float when it is not.
Every other layer stays float. ``quantize_model(model, ...)`` is
``quantize_apply(quantize_annotate_model(model), ...)`` (``tests/test_annotate.py`` checks that
both give the same layers, configs and outputs), with ``layer_bits`` and ``skip_layers`` in
place of per-layer annotations, and nested models quantized recursively (annotations inside a
nested model are not seen by TFMOT's ``quantize_apply``; ``uniq_tf.quantize_apply`` sees them).
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

from uniq_tf import internals, kquantile, registry
from uniq_tf._keras import keras, require_keras2_model
from uniq_tf.quantize import (
    ACTIVATION_BITS_RANGE,
    HIGH_NOISE_SCALE,
    WEIGHT_BITS_RANGE,
    _check_bits,
    _check_graph_model,
    _is_nested_model,
    _plan,
    check_layer_overrides,
    check_settings,
    flatten_layers,
    quantize_model,
)
from uniq_tf.scheme import UniqLayoutTransform, UniqQuantizeRegistry

_tfmot_keras = tfmot.quantization.keras
QuantizeAnnotate = internals.quantize_annotate_type()
_QuantizeConfig = _tfmot_keras.QuantizeConfig
_APPLY_HINT = (
    "apply annotations with uniq_tf.quantize_apply(model, ...) or with "
    "tfmot.quantization.keras.quantize_apply(model, scheme=uniq_tf.UniqScheme(...))"
)


@keras.utils.register_keras_serializable(package="uniq_tf")
class LayerBits(_QuantizeConfig):
    """The bit widths annotated on one layer (:func:`quantize_annotate_layer`). Not a config a
    layer is quantized with: applying the annotations turns it into the layer's UNIQ config.

    Args:
        weight_bits: the layer's codebook width, or None for the value given at apply time.
        activation_bits: its activation width, or None for the value given at apply time.
    """

    def __init__(self, weight_bits: int | None = None, activation_bits: int | None = None):
        self.weight_bits = weight_bits
        self.activation_bits = activation_bits

    def _not_applied(self, *args, **kwargs):
        raise TypeError(f"uniq_tf.LayerBits is an annotation, not a QuantizeConfig: {_APPLY_HINT}")

    get_weights_and_quantizers = _not_applied
    get_activations_and_quantizers = _not_applied
    set_quantize_weights = _not_applied
    set_quantize_activations = _not_applied
    get_output_quantizers = _not_applied

    def get_config(self) -> dict:
        return {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits}

    def __eq__(self, other) -> bool:
        return isinstance(other, LayerBits) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"LayerBits(weight_bits={self.weight_bits}, activation_bits={self.activation_bits})"


def _quantizable(layer) -> bool:
    return registry.kernel_attributes(layer) is not None or registry.is_activation_layer(layer)


def quantize_annotate_layer(
    layer, weight_bits: int | None = None, activation_bits: int | None = None
):
    """Marks ``layer`` to be quantized by UNIQ when the model is applied.

    Args:
        layer: a tf_keras layer of a type UNIQ quantizes (kernel layers, ReLU/Activation).
        weight_bits: this layer's codebook width (1..16); None: the width given to apply.
            Not allowed on activation layers.
        activation_bits: this layer's activation width (2..16); None: the width given to apply.

    Returns:
        The layer inside TFMOT's ``QuantizeAnnotate`` wrapper (use it as the layer).

    Raises:
        TypeError: ``layer`` is not a tf_keras layer (a Keras 3 layer gets advice), or is a model.
        ValueError: UNIQ does not quantize this layer type, or a bit width is out of range.
    """
    if isinstance(layer, keras.Model) or not isinstance(layer, keras.layers.Layer):
        module = type(layer).__module__ or ""
        hint = (" (a Keras 3 layer: build the model with uniq_tf.keras)"
                if module.split(".")[0] == "keras" else "")
        raise TypeError(
            f"quantize_annotate_layer takes a tf_keras layer (not a model); got "
            f"{type(layer).__name__}{hint}."
        )
    if isinstance(layer, QuantizeAnnotate):
        raise ValueError(f"layer {layer.layer.name!r} is already annotated.")
    if not _quantizable(layer):
        raise ValueError(
            f"UNIQ does not quantize layer {layer.name!r} ({type(layer).__name__}); it quantizes "
            f"kernel layers ({', '.join(t.__name__ for t in registry.kernel_layer_types())}) and "
            "ReLU/Activation layers with a non-linear activation. Register another kernel layer "
            "type with uniq_tf.register_layer."
        )
    if weight_bits is not None:
        if registry.kernel_attributes(layer) is None:
            raise ValueError(
                f"weight_bits={weight_bits} for {layer.name!r} ({type(layer).__name__}), an "
                "activation layer without weights; pass activation_bits only."
            )
        weight_bits = _check_bits(weight_bits, WEIGHT_BITS_RANGE, f"weight_bits of {layer.name!r}")
    if activation_bits is not None:
        activation_bits = _check_bits(
            activation_bits, ACTIVATION_BITS_RANGE, f"activation_bits of {layer.name!r}")
    bits = None
    if weight_bits is not None or activation_bits is not None:
        bits = LayerBits(weight_bits, activation_bits)
    return _tfmot_keras.quantize_annotate_layer(layer, bits)


def quantize_annotate_model(model):
    """Annotates every layer of ``model`` that UNIQ quantizes (nested models included).

    Args:
        model: a built tf_keras Sequential or Functional model.

    Returns:
        A copy of ``model`` (sharing its layers) with those layers annotated.

    Raises:
        TypeError: ``model`` is not a tf_keras model.
        ValueError: ``model`` is subclassed or unbuilt, or already annotated or quantized.
    """
    model = require_keras2_model(model)
    _check_graph_model(model, f"model {model.name!r}")
    if _annotations(model):
        raise ValueError(f"model {model.name!r} already holds annotated layers.")

    def annotate(layer):
        if _is_nested_model(layer):
            return quantize_annotate_model(layer)
        return _tfmot_keras.quantize_annotate_layer(layer) if _quantizable(layer) else layer

    return keras.models.clone_model(model, clone_function=annotate)


def _annotations(model) -> dict:
    """Annotated layer name -> its LayerBits (or None), nested models included."""
    out = {}
    for layer in model.layers:
        if _is_nested_model(layer):
            out.update(_annotations(layer))
        elif isinstance(layer, QuantizeAnnotate):
            out[layer.layer.name] = layer.quantize_config
    return out


def _unwrap(model):
    """``model`` with its annotation wrappers removed (the wrapped layers themselves)."""

    def unwrap(layer):
        if _is_nested_model(layer):
            return _unwrap(layer)
        return layer.layer if isinstance(layer, QuantizeAnnotate) else layer

    return keras.models.clone_model(model, clone_function=unwrap)


def annotation_overrides(model, annotations: dict) -> tuple[dict, set]:
    """(layer_bits, skip_layers) of :func:`uniq_tf.quantize_model` that quantize exactly the
    annotated layers of the unwrapped ``model`` (module doc: an unannotated activation layer
    follows the kernel layer before it)."""
    for name, bits in annotations.items():
        if bits is not None and not isinstance(bits, LayerBits):
            raise ValueError(
                f"layer {name!r} is annotated with a {type(bits).__name__}; UNIQ annotations "
                "carry bit widths only (uniq_tf.quantize_annotate_layer(layer, weight_bits=..., "
                "activation_bits=...))."
            )
    layer_bits = {
        name: (bits.weight_bits, bits.activation_bits)
        for name, bits in annotations.items() if bits is not None
    }
    skip, owner_annotated = set(), True
    for layer in flatten_layers(model):
        if registry.kernel_attributes(layer) is not None:
            owner_annotated = layer.name in annotations
            if not owner_annotated:
                skip.add(layer.name)
        elif registry.is_activation_layer(layer):
            if layer.name not in annotations and not owner_annotated:
                skip.add(layer.name)
    return layer_bits, skip


def quantize_apply(
    model,
    weight_bits: int = 4,
    activation_bits: int = 8,
    per_channel: bool = False,
    distribution: str = "gaussian",
    high_noise: bool = False,
    noise: str = kquantile.CLIPPED,
):
    """Quantizes the annotated layers of ``model`` with UNIQ (every other layer stays float).

    Args:
        model: a tf_keras model holding layers annotated by :func:`quantize_annotate_layer` or
            :func:`quantize_annotate_model`.
        weight_bits, activation_bits: widths of the annotated layers that do not set their own.
        per_channel, distribution, high_noise, noise: as in :func:`uniq_tf.quantize_model`.

    Returns:
        The quantization-aware model, as :func:`uniq_tf.quantize_model` returns it.

    Raises:
        TypeError: ``model`` is not a tf_keras model.
        ValueError: nothing is annotated, an argument is out of range, or an annotation is not
            UNIQ's.
    """
    model = require_keras2_model(model)
    _check_graph_model(model, f"model {model.name!r}")
    annotations = _annotations(model)
    if not annotations:
        raise ValueError(
            f"model {model.name!r} has no annotated layer: annotate layers with "
            "uniq_tf.quantize_annotate_layer (or the whole model with "
            "uniq_tf.quantize_annotate_model) first, or call uniq_tf.quantize_model."
        )
    unwrapped = _unwrap(model)
    layer_bits, skip = annotation_overrides(unwrapped, annotations)
    return quantize_model(
        unwrapped, weight_bits, activation_bits, layer_bits=layer_bits, skip_layers=skip,
        per_channel=per_channel, distribution=distribution, high_noise=high_noise, noise=noise,
    )


class _AnnotationLayout(UniqLayoutTransform):
    """TFMOT's layout step for UniqScheme: turns TFMOT's map of annotated layers into UNIQ's
    plan (the same planner as quantize_model), then splits SeparableConv2D layers as ours does."""

    def __init__(self, scheme: UniqScheme):
        self._scheme = scheme

    def apply(self, model, layer_quantize_map):
        # TFMOT adds the model's input layers with an empty entry; no input layer is a kernel
        # or activation layer, so the plan leaves them out (and TFMOT then leaves them alone).
        annotations = {name: entry.get("quantize_config")
                       for name, entry in layer_quantize_map.items()}
        s = self._scheme
        layer_bits, skip = annotation_overrides(model, annotations)
        layer_bits, skip = check_layer_overrides(model, layer_bits, skip)
        plan = _plan(
            model, s.weight_bits, s.activation_bits, layer_bits, skip, s.per_channel,
            s.distribution, HIGH_NOISE_SCALE if s.high_noise else 1.0, s.noise,
        )
        model, plan = super().apply(model, plan)
        return model, {name: {"quantize_config": config} for name, config in plan.items()}


class UniqScheme(_tfmot_keras.QuantizeScheme):
    """UNIQ as a TFMOT quantize scheme, for ``tfmot.quantization.keras.quantize_apply``.

    Args:
        weight_bits, activation_bits, per_channel, distribution, high_noise, noise: as in
            :func:`uniq_tf.quantize_model`.

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        weight_bits: int = 4,
        activation_bits: int = 8,
        per_channel: bool = False,
        distribution: str = "gaussian",
        high_noise: bool = False,
        noise: str = kquantile.CLIPPED,
    ):
        self.weight_bits, self.activation_bits = check_settings(
            weight_bits, activation_bits, distribution, noise)
        self.per_channel = bool(per_channel)
        self.distribution = distribution
        self.high_noise = bool(high_noise)
        self.noise = noise

    def get_layout_transformer(self):
        return _AnnotationLayout(self)

    def get_quantize_registry(self):
        # Every annotated layer gets its config from the layout step; layers that are not
        # annotated stay float (TFMOT asks the registry about their outputs: nothing to add).
        return UniqQuantizeRegistry({})


__all__ = [
    "LayerBits",
    "UniqScheme",
    "annotation_overrides",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
]
