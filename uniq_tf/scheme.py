"""UNIQ's quantize scheme: our registry and our layout, in place of TFMOT's 8-bit defaults.

TFMOT's default 8-bit scheme folds batch norm into convolutions, inserts an 8-bit input
quantizer and adds 8-bit output quantizers to producers. UNIQ keeps batch norm as a float layer
while training (it is fine-tuned; exporters fold it), leaves the model input as the data gives
it, and quantizes exactly the tensors that the plan made by ``quantize_model`` names.
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

_QuantizeScheme = tfmot.quantization.keras.QuantizeScheme
_QuantizeRegistry = tfmot.quantization.keras.QuantizeRegistry
_QuantizeLayoutTransform = tfmot.quantization.keras.QuantizeLayoutTransform


class UniqQuantizeRegistry(_QuantizeRegistry):
    """Looks up each layer's QuantizeConfig by name in a plan made for one model."""

    def __init__(self, plan: dict):
        self._plan = plan

    def supports(self, layer) -> bool:
        return layer.name in self._plan

    def get_quantize_config(self, layer):
        return self._plan[layer.name]


class UniqLayoutTransform(_QuantizeLayoutTransform):
    """The identity layout: no batch-norm folding, no inserted input quantizer (see module doc)."""

    def apply(self, model, layer_quantize_map):
        return model, layer_quantize_map


class UniqQuantizeScheme(_QuantizeScheme):
    def __init__(self, plan: dict):
        self._plan = plan

    def get_layout_transformer(self):
        return UniqLayoutTransform()

    def get_quantize_registry(self):
        return UniqQuantizeRegistry(self._plan)
