"""Every read of a private attribute of TFMOT, tf_keras or LiteRT, in one place.

uniq_tf needs a few things those libraries do not expose publicly: the variables TFMOT's
``QuantizeWrapperV2`` builds for its quantizers, and the call graph of a Functional model (which
layer call produced a tensor, the nodes of a model by depth). Each accessor below reads one such
attribute; nothing else in the package touches them. ``tests/test_internals.py`` checks every
accessor against the pinned TensorFlow, so an upgrade that moves one fails there, loudly and in
one place, instead of deep inside an exporter.
"""

from __future__ import annotations

import sys
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


def node_inbound(node) -> list[tuple]:
    """(layer, node index, tensor index) of every tensor a layer call (a Keras ``Node``)
    consumes, in order."""
    return [tuple(item[:3]) for item in _read(node, "iterate_inbound")()]


def node_outputs(node) -> list:
    """The symbolic output tensors of a layer call, flattened."""
    return tf.nest.flatten(_read(node, "outputs"))


def node_inputs(node) -> list:
    """The symbolic input tensors of a layer call that come from other layers."""
    return list(_read(node, "keras_inputs"))


def node_layer(node):
    """The layer a node is a call of."""
    return _read(node, "layer")


def node_is_input(node) -> bool:
    """True for the node of an ``InputLayer``."""
    return bool(_read(node, "is_input"))


def nodes_by_depth(model) -> dict[int, list]:
    """A Functional model's nodes keyed by depth (0 = the output layers' nodes)."""
    return _read(model, "_nodes_by_depth")


def is_network_node(model, layer, node_index: int) -> bool:
    """True when ``layer``'s call ``node_index`` belongs to ``model``'s graph (a layer shared
    with another model has calls that do not)."""
    return f"{layer.name}_ib-{node_index}" in _read(model, "_network_nodes")


# --- TensorFlow internals --------------------------------------------------------------------


def assign_moving_average(variable, value, decay: float):
    """``variable = decay * variable + (1 - decay) * value`` (no zero-debiasing), as TFMOT's
    MovingAverageQuantizer updates its range; returns the updated value."""
    return tf.__internal__.train.assign_moving_average(variable, value, decay,
                                                       zero_debias=False)


def merge_call(fn, *args):
    """Runs ``fn(strategy, *args)`` once across replicas from replica context (under
    tf.distribute), or directly where there is no strategy, as optimizers' updates do."""
    return tf.__internal__.distribute.interim.maybe_merge_call(
        fn, tf.distribute.get_strategy(), *args)


_KERAS_V3_SAVER = ("tf_keras.src.saving.saving_lib", "save_model")
_LIBRARIES = ("tf_keras", "keras", "tensorflow", "tensorflow_model_optimization", "uniq_tf")


def keras_v3_save() -> tuple[tuple, int] | None:
    """While tf_keras writes a model in the .keras (v3) format (its ``saving_lib``
    ``save_model`` is on the call stack): (a key of that save, the same for every call made
    during it; the ``stacklevel`` at which ``warnings.warn``, called by this function's
    caller, points at the user's line that saved). None otherwise. The .keras format cannot
    hold a quantized model (TFMOT's wrappers do not restore from it); configs ask this to
    warn once per save."""
    frame, depth, key = sys._getframe(1), 1, None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if key is None and (module, frame.f_code.co_name) == _KERAS_V3_SAVER:
            key = (id(frame), repr(frame.f_locals.get("filepath")))
        elif key is not None and module.split(".")[0] not in _LIBRARIES:
            return key, depth
        frame, depth = frame.f_back, depth + 1
    return None if key is None else (key, depth - 1)


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
    "assign_moving_average",
    "merge_call",
    "node_inbound",
    "node_inputs",
    "node_is_input",
    "node_layer",
    "node_outputs",
    "keras_v3_save",
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
