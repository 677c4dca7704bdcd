"""Quantize part of a model, the TFMOT way: annotate layers, then apply.

    annotated = keras.Model(inputs, ...)                      # build with annotations, or
    annotated = uniq_tf.quantize_annotate_model(model)       # annotate every layer UNIQ handles
    conv = uniq_tf.quantize_annotate_layer(keras.layers.Conv2D(8, 3), weight_bits=2)
    quantized = uniq_tf.quantize_apply(annotated, weight_bits=4, activation_bits=8)

or with TFMOT's own entry point and UNIQ's scheme:

    quantized = tfmot.quantization.keras.quantize_apply(
        annotated, scheme=uniq_tf.UniqScheme(weight_bits=4, activation_bits=8))

Annotations are TFMOT's ``QuantizeAnnotate`` wrappers carrying a ``uniq_tf.LayerBits`` (or
nothing). The layers UNIQ quantizes are the annotated kernel layers (Conv1D, Conv2D,
DepthwiseConv2D, SeparableConv2D, Dense, and types added with :func:`uniq_tf.register_layer`)
and activation layers (ReLU, Activation); an activation layer that is not annotated follows the
kernel layer before it (:mod:`uniq_tf.integration.plan`). Every other layer stays float.
As in TFMOT, :func:`quantize_annotate_model` keeps the layers a user annotated already (with
their own bits) and annotates the rest.
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

from uniq_tf import internals
from uniq_tf._keras import keras, require_keras2_model
from uniq_tf.integration import registry
from uniq_tf.integration.configs import LayerBits
from uniq_tf.method.settings import check_activation_bits, check_weight_bits
from uniq_tf.util import graph

QuantizeAnnotate = internals.quantize_annotate_type()
# TFMOT's own quantize_apply clones the annotated model before it asks a scheme anything; a
# model nested inside it keeps its annotation wrappers, which tf_keras can rebuild only when it
# knows their class. Registered, the clone succeeds and UniqScheme's layout step gives TFMOT's
# own answer to a nested model (integration/scheme.py); uniq_tf.quantize_apply quantizes it.
keras.utils.get_custom_objects().setdefault("QuantizeAnnotate", QuantizeAnnotate)


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
        ValueError: UNIQ does not quantize this layer type, the layer is annotated already, or
            a bit width is out of range.
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
    if not registry.is_quantizable(layer):
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
        weight_bits = check_weight_bits(weight_bits, f"weight_bits of {layer.name!r}")
    if activation_bits is not None:
        activation_bits = check_activation_bits(
            activation_bits, f"activation_bits of {layer.name!r}")
    bits = None
    if weight_bits is not None or activation_bits is not None:
        bits = LayerBits(weight_bits, activation_bits)
    return tfmot.quantization.keras.quantize_annotate_layer(layer, bits)


def quantize_annotate_model(model):
    """Annotates every layer of ``model`` that UNIQ quantizes (nested models included); layers
    annotated already keep their annotation (TFMOT's semantics).

    Args:
        model: a built tf_keras Sequential or Functional model.

    Returns:
        A copy of ``model`` (sharing its layers) with those layers annotated.

    Raises:
        TypeError: ``model`` is not a tf_keras model.
        ValueError: ``model`` is subclassed or unbuilt, or quantized already.
    """
    model = require_keras2_model(model)
    graph.check_graph_model(model)

    def annotate(layer):
        if isinstance(layer, QuantizeAnnotate) or not registry.is_quantizable(layer):
            if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
                raise ValueError(f"model {model.name!r} is already quantized; annotate the "
                                 "float model.")
            return layer
        return tfmot.quantization.keras.quantize_annotate_layer(layer)

    return graph.clone(model, annotate)


def annotations(model) -> dict[str, LayerBits | None]:
    """Annotated layer name -> its annotation (a LayerBits, None, or another library's config),
    nested models included."""
    return {layer.layer.name: layer.quantize_config for layer in graph.layers(model)
            if isinstance(layer, QuantizeAnnotate)}


def read_annotations(model) -> tuple:
    """(``model`` without its annotation wrappers (the wrapped layers themselves), its
    annotations as :func:`annotations` gives them)."""
    found = annotations(model)
    unwrapped = graph.clone(
        model, lambda layer: layer.layer if isinstance(layer, QuantizeAnnotate) else layer)
    return unwrapped, found


__all__ = ["QuantizeAnnotate", "annotations", "quantize_annotate_layer",
           "quantize_annotate_model", "read_annotations"]
