"""Bit widths on a model's graph, for BOPs (:mod:`uniq_tf.cost.bops`).

b_a of a layer is the width of the nearest activation quantizer upstream of its input, found by
walking the graph back through layers that keep the bit width
(``uniq_tf.integration.registry.keeps_bit_width``, the one definition the FPGA descriptor uses
too; merges take the widest input), across nested-model boundaries both ways. The model input
counts ``input_bits``; any other producer without a quantizer counts :data:`FLOAT_BITS`.
"""

from __future__ import annotations

from collections.abc import Mapping

from uniq_tf import internals
from uniq_tf._keras import keras, tf
from uniq_tf.integration import registry
from uniq_tf.integration.inspection import QuantizeWrapper

L = keras.layers
FLOAT_BITS = 32


def inner_layer(layer):
    """The layer a quantize wrapper holds, or ``layer`` itself."""
    return layer.layer if isinstance(layer, QuantizeWrapper) else layer


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
        widths = [self.width(lyr, ni, ti, scope) for lyr, ni, ti in internals.node_inbound(node)]
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
            outer_layer, ni, ti = internals.node_inbound(node)[position]
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
        if config is None and registry.keeps_bit_width(inner_layer(layer)):
            return self.input_width(internals.inbound_nodes(layer)[node_index], scope)
        return FLOAT_BITS


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
