"""Bit widths on a model's graph, for BOPs (:mod:`uniq_tf.bops`).

b_a of a layer is the width of the nearest activation quantizer upstream of its input, found by
walking the graph back through layers that keep the bit width (:data:`PASS_THROUGH_TYPES`;
merges take the widest input), across nested-model boundaries both ways. The model input counts
``input_bits``; any other producer without a quantizer counts :data:`FLOAT_BITS`.
"""

from __future__ import annotations

from collections.abc import Mapping

from uniq_tf import internals, quantize, registry
from uniq_tf._keras import keras, tf

L = keras.layers
FLOAT_BITS = 32

# Layers whose output carries the bit width of their input: normalization and rescaling
# (folded into the producer or the thresholds by deployment), routing, pooling and padding.
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
# An un-quantized ReLU keeps its input's grid; other non-linearities leave it (count 32).
_GRID_KEEPING_ACTIVATIONS = ("linear", "relu")


def inner_layer(layer):
    return layer.layer if isinstance(layer, quantize.QuantizeWrapper) else layer


class BitResolver:
    """Bit widths on a model's graph, given each quantized layer's QuantizeConfig by name.

    A tensor is named by its Keras history (layer, node_index, tensor_index) plus a scope:
    the stack of (nested model, the node calling it) frames that reached it, so the walk
    crosses nested-model boundaries both ways.
    """

    def __init__(self, configs: Mapping[str, object], input_bits: int):
        self.configs = configs
        self.input_bits = input_bits
        self._memo: dict = {}

    def config(self, layer):
        return self.configs.get(layer.name)

    def input_width(self, node, scope: tuple) -> int:
        """The widest activation entering ``node`` (merges take the max of their inputs)."""
        widths = [self.width(lyr, ni, ti, scope) for lyr, ni, ti, _ in node.iterate_inbound()]
        return max(widths) if widths else self.input_bits

    def width(self, layer, node_index: int, tensor_index: int, scope: tuple) -> int:
        key = (id(layer), node_index, tensor_index, tuple(id(n) for _, n in scope))
        if key not in self._memo:
            self._memo[key] = self._width(layer, node_index, tensor_index, scope)
        return self._memo[key]

    def _width(self, layer, node_index, tensor_index, scope) -> int:
        if isinstance(layer, L.InputLayer):
            if not scope:
                return self.input_bits
            model, node = scope[-1]
            position = [internals.keras_history(t).layer for t in model.inputs].index(layer)
            outer_layer, ni, ti, _ = list(node.iterate_inbound())[position]
            return self.width(outer_layer, ni, ti, scope[:-1])
        if isinstance(layer, keras.Model):
            history = internals.keras_history(tf.nest.flatten(layer.outputs)[tensor_index])
            frame = (layer, internals.inbound_nodes(layer)[node_index])
            return self.width(
                history.layer, history.node_index, history.tensor_index, (*scope, frame)
            )
        config = self.config(layer)
        bits = getattr(config, "activation_bits", None)
        if bits is not None:
            return bits
        if config is None and _keeps_bit_width(inner_layer(layer)):
            return self.input_width(internals.inbound_nodes(layer)[node_index], scope)
        return FLOAT_BITS


def _keeps_bit_width(layer) -> bool:
    if isinstance(layer, PASS_THROUGH_TYPES):
        return True
    if isinstance(layer, L.ReLU):
        return float(layer.negative_slope) == 0.0
    if isinstance(layer, L.Activation):
        return registry.activation_name(layer) in _GRID_KEEPING_ACTIVATIONS
    return False


def model_nodes(model, scope: tuple = ()):
    """(layer, node, scope) for every layer call in ``model``, forward order, nested models
    entered (their layers listed instead of the model)."""
    for layer in model.layers:
        for node_index, node in enumerate(internals.inbound_nodes(layer)):
            if not internals.is_network_node(model, layer, node_index):
                continue
            if isinstance(layer, keras.Model):
                yield from model_nodes(layer, (*scope, (layer, node)))
            elif not isinstance(layer, L.InputLayer):
                yield layer, node, scope
