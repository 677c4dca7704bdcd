"""UNIQ's quantize scheme: our registry and our layout, in place of TFMOT's 8-bit defaults.

TFMOT's default 8-bit scheme folds batch norm into convolutions, inserts an 8-bit input
quantizer and adds 8-bit output quantizers to producers. UNIQ keeps batch norm as a float layer
while training (it is fine-tuned; exporters fold it), leaves the model input as the data gives
it, and quantizes exactly the tensors that the plan made by ``quantize_model`` names.

The one layout change is TFMOT's too: a quantized ``SeparableConv2D`` named ``N`` becomes a
``DepthwiseConv2D`` named ``N_depthwise`` (its strides, padding, dilation and depth multiplier;
no bias, no activation) followed by a 1x1 ``Conv2D`` that keeps the name ``N`` (the pointwise
kernel, the bias and the activation), weights copied. The same function, float to float
precision; each half is an ordinary wrapped layer with one kernel, which the SavedModel format
saves (a wrapped SeparableConv2D does not: its quantized pointwise kernel is captured from the
wrapper's graph), and which the exporters already handle. The pointwise half keeps the name
because it produces the layer's output: layers downstream, model outputs and activation ranges
are named as before. A plan entry for ``N`` (bits from ``layer_bits[N]``) covers both halves;
the depthwise half's config names ``N`` as its owner. A SeparableConv2D left in float
(``skip_layers``) stays whole.
"""

from __future__ import annotations

import copy

import tensorflow_model_optimization as tfmot

from uniq_tf._keras import keras
from uniq_tf.quantize_config import KernelQuantizeConfig
from uniq_tf.quantizers import KQuantileWeightQuantizer

_QuantizeScheme = tfmot.quantization.keras.QuantizeScheme
_QuantizeRegistry = tfmot.quantization.keras.QuantizeRegistry
_QuantizeLayoutTransform = tfmot.quantization.keras.QuantizeLayoutTransform

DEPTHWISE_SUFFIX = "_depthwise"
_MODEL_CLASSES = ("Functional", "Model", "Sequential")


def split_names(name: str) -> tuple[str, str]:
    """(depthwise, pointwise) layer names of a quantized SeparableConv2D named ``name``."""
    return name + DEPTHWISE_SUFFIX, name


class UniqQuantizeRegistry(_QuantizeRegistry):
    """Looks up each layer's QuantizeConfig by name in a plan made for one model."""

    def __init__(self, plan: dict):
        self._plan = plan

    def supports(self, layer) -> bool:
        return layer.name in self._plan

    def get_quantize_config(self, layer):
        return self._plan[layer.name]


class UniqLayoutTransform(_QuantizeLayoutTransform):
    """Splits each quantized SeparableConv2D in two (module doc); nothing else changes: no
    batch-norm folding, no inserted input quantizer."""

    def apply(self, model, layer_quantize_map):
        """(the model with its quantized SeparableConv2D layers split, the plan
        ``layer_quantize_map`` (layer name -> QuantizeConfig) for that model)."""
        plan = layer_quantize_map
        layers = _flat_layers(model)
        names = [layer.name for layer in layers if _splits(layer, plan.get(layer.name))]
        if not names:
            return model, plan
        taken = {layer.name for layer in layers}
        for name in names:
            depthwise = split_names(name)[0]
            if depthwise in taken:
                raise ValueError(
                    f"uniq_tf splits the SeparableConv2D {name!r} into a DepthwiseConv2D "
                    f"{depthwise!r} and a 1x1 Conv2D {name!r}, but the model already has a "
                    f"layer named {depthwise!r}; rename that layer."
                )
        split = _rebuild(model, set(names))
        _copy_split_weights(layers, _flat_layers(split), set(names))
        return split, _split_plan(plan, set(names))


class UniqQuantizeScheme(_QuantizeScheme):
    def __init__(self, plan: dict):
        self._plan = plan

    def get_layout_transformer(self):
        return UniqLayoutTransform()

    def get_quantize_registry(self):
        return UniqQuantizeRegistry(self._plan)


# --------------------------------------------------------------------------- the split


def _splits(layer, config) -> bool:
    """True for a SeparableConv2D (not a subclass) whose plan quantizes both kernels."""
    return (
        type(layer) is keras.layers.SeparableConv2D
        and isinstance(config, KernelQuantizeConfig)
        and set(config.weight_quantizers) == {"depthwise_kernel", "pointwise_kernel"}
    )


def _flat_layers(model) -> list:
    out = []
    for layer in model.layers:
        out.extend(_flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def _halves(config: dict) -> tuple[dict, dict]:
    """The DepthwiseConv2D and Conv2D configs equal to SeparableConv2D ``config``."""
    depthwise_name, pointwise_name = split_names(config["name"])
    common = {"trainable": config.get("trainable", True), "dtype": config.get("dtype"),
              "data_format": config.get("data_format")}
    depthwise = {
        **common, "name": depthwise_name,
        "kernel_size": config["kernel_size"], "strides": config["strides"],
        "padding": config["padding"], "depth_multiplier": config["depth_multiplier"],
        "dilation_rate": config["dilation_rate"], "activation": None, "use_bias": False,
        "depthwise_initializer": config["depthwise_initializer"],
        "depthwise_regularizer": config["depthwise_regularizer"],
        "depthwise_constraint": config["depthwise_constraint"],
    }
    pointwise = {
        **common, "name": pointwise_name,
        "filters": config["filters"], "kernel_size": (1, 1), "strides": (1, 1),
        "padding": "valid", "dilation_rate": (1, 1), "groups": 1,
        "activation": config["activation"], "use_bias": config["use_bias"],
        "kernel_initializer": config["pointwise_initializer"],
        "bias_initializer": config["bias_initializer"],
        "kernel_regularizer": config["pointwise_regularizer"],
        "bias_regularizer": config["bias_regularizer"],
        "activity_regularizer": config["activity_regularizer"],
        "kernel_constraint": config["pointwise_constraint"],
        "bias_constraint": config["bias_constraint"],
    }
    return depthwise, pointwise


def _split_config(config: dict, names: set[str]) -> dict:
    """A Functional or Sequential model ``config`` with the SeparableConv2D entries named in
    ``names`` replaced by their two halves (nested models too). The pointwise half keeps the
    name, so references downstream stay valid; it takes the depthwise half's outputs, call
    for call."""
    layers = []
    for entry in config["layers"]:
        inner = entry.get("config", {})
        if entry.get("class_name") in _MODEL_CLASSES and "layers" in inner:
            layers.append({**entry, "config": _split_config(inner, names)})
            continue
        if entry.get("class_name") != "SeparableConv2D" or inner.get("name") not in names:
            layers.append(entry)
            continue
        depthwise, pointwise = _halves(inner)
        base = {k: v for k, v in entry.items() if k not in ("build_config", "compile_config")}
        first = {**base, "class_name": "DepthwiseConv2D", "config": depthwise}
        second = {**base, "class_name": "Conv2D", "config": pointwise}
        if "name" in entry:
            first["name"] = depthwise["name"]
        if "inbound_nodes" in entry:
            second["inbound_nodes"] = [
                [[depthwise["name"], i, 0, {}]] for i in range(len(entry["inbound_nodes"]))
            ]
        layers += [first, second]
    return {**config, "layers": layers}


def _classes(model) -> dict[str, type]:
    """Class name -> class of every layer and model in ``model``, for from_config."""
    out = {type(model).__name__: type(model)}
    for layer in model.layers:
        out.update(_classes(layer) if isinstance(layer, keras.Model)
                   else {type(layer).__name__: type(layer)})
    return out


def _rebuild(model, names: set[str]):
    config = _split_config(copy.deepcopy(model.get_config()), names)
    custom = {
        **_classes(model),
        "DepthwiseConv2D": keras.layers.DepthwiseConv2D,
        "Conv2D": keras.layers.Conv2D,
    }
    with keras.utils.custom_object_scope(custom):
        return type(model).from_config(config)


def _copy_split_weights(source_layers: list, target_layers: list, names: set[str]) -> None:
    targets = {layer.name: layer for layer in target_layers}
    for source in source_layers:
        if source.name not in names:
            targets[source.name].set_weights(source.get_weights())
            continue
        depthwise_name, pointwise_name = split_names(source.name)
        targets[depthwise_name].set_weights([source.depthwise_kernel.numpy()])
        bias = [source.bias.numpy()] if source.use_bias else []
        targets[pointwise_name].set_weights([source.pointwise_kernel.numpy(), *bias])


def _fresh(quantizer: KQuantileWeightQuantizer) -> KQuantileWeightQuantizer:
    return KQuantileWeightQuantizer.from_config(quantizer.get_config())


def _split_plan(plan: dict, names: set[str]) -> dict:
    """``plan`` with each split layer's config (quantizers "depthwise_kernel" and
    "pointwise_kernel") replaced by one config per half, in forward order."""
    out = {}
    for name, config in plan.items():
        if name not in names:
            out[name] = config
            continue
        depthwise_name, pointwise_name = split_names(name)
        quantizers = config.weight_quantizers
        out[depthwise_name] = KernelQuantizeConfig(
            {"depthwise_kernel": _fresh(quantizers["depthwise_kernel"])}, None, owner=name)
        out[pointwise_name] = KernelQuantizeConfig(
            {"kernel": _fresh(quantizers["pointwise_kernel"])}, config.activation_bits,
            owner=config.owner)
    return out
