"""The one layout change UNIQ makes before wrapping: a quantized SeparableConv2D is split in two.

As TFMOT does, a quantized ``SeparableConv2D`` named ``N`` becomes a ``DepthwiseConv2D`` named
``N_depthwise`` (its strides, padding, dilation and depth multiplier; no bias, no activation)
followed by a 1x1 ``Conv2D`` that keeps the name ``N`` (the pointwise kernel, the bias and the
activation), weights copied. The same function, float to float precision; each half is an
ordinary wrapped layer with one kernel, which the SavedModel format saves (a wrapped
SeparableConv2D does not: its quantized pointwise kernel is captured from the wrapper's
graph), and which the exporters handle. The pointwise half keeps the name because it produces
the layer's output: layers downstream, model outputs and activation ranges are named as before.
A plan entry for ``N`` (bits from ``layer_bits[N]``) covers both halves; both halves' configs
name ``N`` as their owner, which is how ``N`` addresses both (:mod:`uniq_tf.integration.names`).
A SeparableConv2D left in float (``skip_layers``) stays whole.

Nothing else changes: no batch-norm folding, no inserted input quantizer (UNIQ keeps batch norm
as a float layer while training, and the model input as the data gives it).
"""

from __future__ import annotations

import copy

from uniq_tf._keras import keras
from uniq_tf.integration.configs import KernelQuantizeConfig
from uniq_tf.method.quantizers import KQuantileWeightQuantizer
from uniq_tf.util import graph

DEPTHWISE_SUFFIX = "_depthwise"
_MODEL_CLASSES = ("Functional", "Model", "Sequential")


def split_names(name: str) -> tuple[str, str]:
    """(depthwise, pointwise) layer names of a quantized SeparableConv2D named ``name``."""
    return name + DEPTHWISE_SUFFIX, name


def split_separable(model, plan: dict) -> tuple:
    """(``model`` with its quantized SeparableConv2D layers split, ``plan`` (layer name ->
    QuantizeConfig) for that model); both unchanged when nothing is split.

    Raises:
        ValueError: the model already has a layer named like a depthwise half.
    """
    layers = graph.layers(model)
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
    _copy_split_weights(layers, graph.layers(split), set(names))
    return split, _split_plan(plan, set(names))


# --------------------------------------------------------------------------- the split


def _splits(layer, config) -> bool:
    """True for a SeparableConv2D (not a subclass) whose plan quantizes both kernels."""
    return (
        type(layer) is keras.layers.SeparableConv2D
        and isinstance(config, KernelQuantizeConfig)
        and set(config.weight_quantizers) == {"depthwise_kernel", "pointwise_kernel"}
    )


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
    out = {type(each).__name__: type(each) for each in (model, *graph.nested_models(model))}
    out.update({type(layer).__name__: type(layer) for layer in graph.layers(model)})
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
