"""Every read of a private attribute of TFMOT, tf_keras or LiteRT, in one place.

uniq_tf needs a few things those libraries do not expose publicly: the variables TFMOT's
``QuantizeWrapperV2`` builds for its quantizers, and the call graph of a Functional model (which
layer call produced a tensor, the nodes of a model by depth). Each accessor below reads one such
attribute; nothing else in the package touches them. ``tests/test_internals.py`` checks every
accessor against the pinned TensorFlow, so an upgrade that moves one fails there, loudly and in
one place, instead of deep inside an exporter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from uniq_tf._keras import keras, tf


class KerasHistory(NamedTuple):
    """Where a symbolic tensor of a Functional model came from."""

    layer: Any
    node_index: int
    tensor_index: int


def _missing(owner: object, attribute: str) -> AttributeError:
    return AttributeError(
        f"{type(owner).__module__}.{type(owner).__name__} has no attribute {attribute!r}: the "
        "installed TensorFlow/tf_keras/TFMOT differs from the versions uniq_tf supports "
        "(requirements.txt pins the tested pair); see uniq_tf/internals.py."
    )


def _read(owner: object, attribute: str):
    try:
        return getattr(owner, attribute)
    except AttributeError:
        raise _missing(owner, attribute) from None


# --- TFMOT's QuantizeWrapperV2 ---------------------------------------------------------------


def wrapper_weight_vars(wrapper) -> list[tuple]:
    """(weight, quantizer, quantizer variables) per quantized weight of a QuantizeWrapperV2, in
    the order of its config's ``get_weights_and_quantizers``."""
    return list(_read(wrapper, "_weight_vars"))


def quantize_annotate_type() -> type:
    """TFMOT's ``QuantizeAnnotate`` wrapper class (public only through the functions that
    create it)."""
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate import (
        QuantizeAnnotate,
    )

    return QuantizeAnnotate


def wrapper_output_quantizers(wrapper) -> list:
    """A QuantizeWrapperV2's output quantizers (TFMOT supports at most one; empty if none)."""
    return list(getattr(wrapper, "_output_quantizers", None) or [])


def wrapper_output_quantizer_vars(wrapper) -> dict:
    """The variables of a QuantizeWrapperV2's output quantizer (built only when it has one)."""
    return _read(wrapper, "_output_quantizer_vars")


# --- tf_keras Functional models --------------------------------------------------------------


def is_graph_network(model) -> bool:
    """True for a built Functional (or Sequential-as-graph) model, False for a subclassed one."""
    return bool(getattr(model, "_is_graph_network", False))


def keras_history(tensor) -> KerasHistory:
    """The (layer, node index, tensor index) that produced a symbolic Keras tensor."""
    layer, node_index, tensor_index = _read(tensor, "_keras_history")
    return KerasHistory(layer, node_index, tensor_index)


def inbound_nodes(layer) -> list:
    """The calls of ``layer`` (one node per call; more than one for a shared layer)."""
    return list(_read(layer, "_inbound_nodes"))


def nodes_by_depth(model) -> dict[int, list]:
    """A Functional model's nodes keyed by depth (0 = the output layers' nodes)."""
    return _read(model, "_nodes_by_depth")


def is_network_node(model, layer, node_index: int) -> bool:
    """True when ``layer``'s call ``node_index`` belongs to ``model``'s graph (a layer shared
    with another model has calls that do not)."""
    return f"{layer.name}_ib-{node_index}" in _read(model, "_network_nodes")


# --- tf_keras optimizers -----------------------------------------------------------------------


def build_optimizer(optimizer, variables) -> None:
    """Creates ``optimizer``'s slot variables for ``variables`` in their order (tf_keras'
    ``build``; legacy optimizers' ``_create_all_weights``)."""
    build = getattr(optimizer, "build", None) or getattr(optimizer, "_create_all_weights", None)
    if build is None:
        raise _missing(optimizer, "build")
    build(list(variables))


def optimizer_slots(optimizer, variable) -> list:
    """The optimizer variables that belong to ``variable`` (SGD's momentum, Adam's m and v,
    ...): for tf_keras optimizers, the entries at ``variable``'s index of the optimizer's lists
    of per-variable slots; for legacy optimizers, ``get_slot``."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    index_of = getattr(inner, "_index_dict", None)
    if index_of is not None and hasattr(inner, "_var_key"):
        index = index_of.get(inner._var_key(variable))
        if index is None:
            return []
        slots, seen = [], {variable.ref()}
        for name, value in sorted(vars(inner).items()):
            if name in ("_variables", "_trainable_variables") or not isinstance(
                value, (list, tuple)
            ):
                continue
            if len(value) != len(index_of) or not all(isinstance(s, tf.Variable) for s in value):
                continue
            slot = value[index]
            if slot.shape == variable.shape and slot.ref() not in seen:
                seen.add(slot.ref())
                slots.append(slot)
        return slots
    if hasattr(inner, "get_slot_names"):  # tf_keras.optimizers.legacy
        slots = []
        for name in inner.get_slot_names():
            try:
                slots.append(inner.get_slot(variable, name))
            except KeyError:
                pass
        return slots
    return []


# --- LiteRT / TFLite interpreter --------------------------------------------------------------


def set_calibrate_only(converter) -> None:
    """Makes a ``TFLiteConverter`` stop after calibration: ``convert()`` then returns the float
    model with the recorded min/max of every tensor (what ``ranges="learned"`` edits)."""
    if not hasattr(converter, "_experimental_calibrate_only"):
        raise _missing(converter, "_experimental_calibrate_only")
    converter._experimental_calibrate_only = True


def interpreter_ops(interpreter) -> list[dict]:
    """The operators of a TFLite interpreter (dicts with ``inputs``, ``outputs``, ``op_name``)."""
    return list(_read(interpreter, "_get_ops_details")())


__all__ = [
    "KerasHistory",
    "inbound_nodes",
    "interpreter_ops",
    "is_graph_network",
    "is_network_node",
    "keras",
    "keras_history",
    "nodes_by_depth",
    "build_optimizer",
    "optimizer_slots",
    "quantize_annotate_type",
    "set_calibrate_only",
    "wrapper_output_quantizer_vars",
    "wrapper_output_quantizers",
    "wrapper_weight_vars",
]
