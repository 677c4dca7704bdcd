"""Walks over a tf_keras model and the models nested inside it, at any depth.

Every part of uniq_tf that visits a model's layers goes through these functions, so nested
models (a keras.applications backbone inside a classifier) are seen the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from uniq_tf import internals
from uniq_tf._keras import keras


def is_model(layer) -> bool:
    """True for a model used as a layer of another model."""
    return isinstance(layer, keras.Model)


def layers(model) -> list:
    """The layers of ``model`` in forward order, nested models entered (and not listed), input
    layers left out."""
    out = []
    for layer in model.layers:
        if is_model(layer):
            out.extend(layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def nested_models(model) -> list:
    """Every model inside ``model``, at any depth, outer ones first."""
    out = []
    for layer in model.layers:
        if is_model(layer):
            out += [layer, *nested_models(layer)]
    return out


def clone(model, clone_function: Callable):
    """``keras.models.clone_model`` with ``clone_function`` applied to every layer that is not
    a model; nested models are cloned the same way, at any depth."""

    def visit(layer):
        return clone(layer, clone_function) if is_model(layer) else clone_function(layer)

    return keras.models.clone_model(model, clone_function=visit)


def weight_name(weight) -> str:
    """A weight's attribute-style name: "kernel" for "conv1/kernel:0"."""
    return weight.name.split("/")[-1].split(":")[0]


def check_graph_model(model, where: str | None = None) -> None:
    """ValueError unless ``model`` and every model inside it is a built Sequential or
    Functional model (uniq_tf needs the graph of layer calls)."""
    for each in (model, *nested_models(model)):
        name = where if each is model and where else (
            f"model {each.name!r}" if each is model else f"nested model {each.name!r}")
        if not isinstance(each, keras.Sequential) and not internals.is_graph_network(each):
            raise ValueError(
                f"{name} is a subclassed tf_keras.Model ({type(each).__name__}); uniq_tf can "
                "quantize Sequential and Functional models only. Rebuild it with the "
                "Functional API."
            )
        if not each.built:
            raise ValueError(
                f"{name} is not built; call `model.build(input_shape)` or give it an Input "
                "first."
            )


def check_finite_weights(model) -> None:
    """ValueError naming every layer of ``model`` whose float weights hold NaN or inf."""
    bad = [
        f"{layer.name!r} ({weight.name})"
        for layer in layers(model)
        for weight in layer.weights
        if weight.dtype.is_floating and not np.isfinite(weight.numpy()).all()
    ]
    if bad:
        raise ValueError(
            f"Model {model.name!r} has non-finite weights (NaN or inf) in layer(s) "
            f"{', '.join(bad)}; their codebooks and outputs would be NaN. Restore them from a "
            "good checkpoint (or retrain: training diverged) before quantizing or exporting."
        )


__all__ = ["check_finite_weights", "check_graph_model", "clone", "is_model", "layers",
           "nested_models", "weight_name"]
