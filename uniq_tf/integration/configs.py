"""QuantizeConfigs: which tensors of a layer get which UNIQ quantizer, and the annotation that
carries a layer's own bit widths until the model is applied.

``KernelQuantizeConfig`` quantizes a layer's kernel(s) with the k-quantile weight quantizer and,
when the layer has a fused non-linear activation, its output with the activation quantizer.
``ActivationQuantizeConfig`` quantizes the output of an activation layer (ReLU, Activation).
Biases, batch norm and everything else stay in float (docs/method.md, "What stays float").
``LayerBits`` is what ``quantize_annotate_layer`` puts on a layer. :func:`quantize_scope` is
what loading a saved quantized model needs.

A quantized model cannot be loaded back from the .keras format (TFMOT's wrappers do not
restore from it): the configs warn while tf_keras writes that format (:data:`KERAS_FORMAT_WARNING`),
whichever model holds them (a clone too); ``uniq_tf.saving`` explains the formats that work.
"""

from __future__ import annotations

import warnings

import tensorflow_model_optimization as tfmot

from uniq_tf import internals
from uniq_tf._keras import keras
from uniq_tf.integration import registry
from uniq_tf.method.quantizers import KQuantileWeightQuantizer, SwitchableActivationQuantizer
from uniq_tf.method.settings import check_activation_bits, check_weight_bits

_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
KERAS_FORMAT_WARNING = (
    "uniq_tf: a quantized model saved in the .keras format cannot be loaded back (TFMOT's "
    "QuantizeWrapperV2 does not restore from it); save it as .h5 or as a SavedModel directory "
    "and load it with uniq_tf.saving.load_quantized (keras.models.load_model inside "
    "uniq_tf.quantize_scope())."
)
_APPLY_HINT = (
    "apply annotations with uniq_tf.quantize_apply(model, ...) or with "
    "tfmot.quantization.keras.quantize_apply(model, scheme=uniq_tf.UniqScheme(...))"
)


_warned = {"save": None}


def _warn_on_keras_format() -> None:
    """Warns once per .keras save (every config of the model is serialized during it)."""
    save = internals.keras_v3_save()
    if save is not None and save[0] != _warned["save"]:
        _warned["save"] = save[0]
        warnings.warn(KERAS_FORMAT_WARNING, UserWarning, stacklevel=save[1])


@keras.utils.register_keras_serializable(package="uniq_tf")
class KernelQuantizeConfig(_QuantizeConfig):
    """Kernel attributes of a layer -> one KQuantileWeightQuantizer each; optional output.

    Args:
        weight_quantizers: attribute name ("kernel", "depthwise_kernel", ...) -> quantizer.
        activation_bits: bits of the output quantizer, or None for no output quantizer.
        owner: the layer of the float model this config quantizes (the two halves of a split
            SeparableConv2D name the same owner), for names, schedules and reports.
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
        _warn_on_keras_format()
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
    """The output of an activation layer -> SwitchableActivationQuantizer(activation_bits).

    Args:
        activation_bits: the activation width.
        owner: the kernel layer whose stage this quantizer follows (None: quantized from the
            first stage on).
    """

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
        _warn_on_keras_format()
        return {"activation_bits": self.activation_bits, "owner": self.owner}


@keras.utils.register_keras_serializable(package="uniq_tf")
class LayerBits(_QuantizeConfig):
    """The bit widths annotated on one layer (``uniq_tf.quantize_annotate_layer``). Not a
    config a layer is quantized with: applying the annotations turns it into the layer's UNIQ
    config.

    Args:
        weight_bits: the layer's codebook width (1..16), or None for the value given at apply
            time.
        activation_bits: its activation width (2..16), or None for the value given at apply
            time.

    Raises:
        ValueError: a width out of range.
    """

    def __init__(self, weight_bits: int | None = None, activation_bits: int | None = None):
        self.weight_bits = None if weight_bits is None else check_weight_bits(weight_bits)
        self.activation_bits = (None if activation_bits is None
                                else check_activation_bits(activation_bits))

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


def quantize_scope(*args):
    """The scope needed to load a saved quantized model (TFMOT's scope plus our classes).

    Args:
        *args: dicts of further custom objects (e.g. your own layer classes), by name.

    Returns:
        A context manager: ``with uniq_tf.quantize_scope(): keras.models.load_model(path)``.
    """
    custom = {
        "KQuantileWeightQuantizer": KQuantileWeightQuantizer,
        "SwitchableActivationQuantizer": SwitchableActivationQuantizer,
        "KernelQuantizeConfig": KernelQuantizeConfig,
        "ActivationQuantizeConfig": ActivationQuantizeConfig,
        "LayerBits": LayerBits,
    }
    for extra in args:
        custom.update(extra)
    return tfmot.quantization.keras.quantize_scope(custom)


__all__ = ["ActivationQuantizeConfig", "KERAS_FORMAT_WARNING", "KernelQuantizeConfig",
           "LayerBits", "quantize_scope"]
