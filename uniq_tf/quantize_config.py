"""QuantizeConfigs: which tensors of a layer get which UNIQ quantizer.

``KernelQuantizeConfig`` quantizes a layer's kernel(s) with the k-quantile weight quantizer and,
when the layer has a fused non-linear activation, its output with the activation quantizer.
``ActivationQuantizeConfig`` quantizes the output of an activation layer (ReLU, Activation).
Biases, batch norm and everything else stay in float (docs/method.md, "What stays float").
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

from uniq_tf import registry
from uniq_tf._keras import keras
from uniq_tf.quantizers import KQuantileWeightQuantizer, SwitchableActivationQuantizer

_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig


@keras.utils.register_keras_serializable(package="uniq_tf")
class KernelQuantizeConfig(_QuantizeConfig):
    """Kernel attributes of a layer -> one KQuantileWeightQuantizer each; optional output.

    Args:
        weight_quantizers: attribute name ("kernel", "depthwise_kernel", ...) -> quantizer.
        activation_bits: bits of the output quantizer, or None for no output quantizer.
        owner: the layer name this config belongs to (for schedules and reports).
    """

    def __init__(
        self,
        weight_quantizers: dict[str, KQuantileWeightQuantizer],
        activation_bits: int | None = None,
        owner: str | None = None,
    ):
        self.weight_quantizers = dict(weight_quantizers)
        self.activation_bits = activation_bits
        self.owner = owner

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, attr), q) for attr, q in self.weight_quantizers.items()]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        for attr, weight in zip(self.weight_quantizers, quantize_weights, strict=False):
            setattr(layer, attr, weight)

    def set_quantize_activations(self, layer, quantize_activations):
        del layer, quantize_activations

    def get_output_quantizers(self, layer):
        if self.activation_bits is None:
            return []
        return [SwitchableActivationQuantizer(
            self.activation_bits, non_negative=registry.has_non_negative_output(layer))]

    def get_config(self):
        return {
            "weight_quantizers": {
                attr: keras.utils.serialize_keras_object(q)
                for attr, q in self.weight_quantizers.items()
            },
            "activation_bits": self.activation_bits,
            "owner": self.owner,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["weight_quantizers"] = {
            attr: keras.utils.deserialize_keras_object(
                q, custom_objects={"KQuantileWeightQuantizer": KQuantileWeightQuantizer}
            )
            for attr, q in config["weight_quantizers"].items()
        }
        return cls(**config)


@keras.utils.register_keras_serializable(package="uniq_tf")
class ActivationQuantizeConfig(_QuantizeConfig):
    """The output of an activation layer -> SwitchableActivationQuantizer(activation_bits)."""

    def __init__(self, activation_bits: int = 8, owner: str | None = None):
        self.activation_bits = activation_bits
        self.owner = owner

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        del layer, quantize_weights

    def set_quantize_activations(self, layer, quantize_activations):
        del layer, quantize_activations

    def get_output_quantizers(self, layer):
        return [SwitchableActivationQuantizer(
            self.activation_bits, non_negative=registry.has_non_negative_output(layer))]

    def get_config(self):
        return {"activation_bits": self.activation_bits, "owner": self.owner}
