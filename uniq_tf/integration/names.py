"""How a name given by a user finds the quantized layers it means: one resolver for all.

A quantized model's layers keep the float model's names, with one exception: a quantized
SeparableConv2D ``N`` is split into ``N_depthwise`` and ``N`` (:mod:`.layout`). The float
model's name ``N`` addresses both halves, in ``set_weight_mode``, ``set_activation_mode``,
``set_grid_bits`` and ``GradualQuantization``'s stages as in ``layer_bits``; a half's own name
addresses that half alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from uniq_tf.integration import inspection
from uniq_tf.integration.configs import KernelQuantizeConfig


def float_name(wrapper) -> str:
    """The float model's name of the layer a wrapper quantizes: a kernel config's owner (both
    halves of a split SeparableConv2D name it), else the layer's own name."""
    config = wrapper.quantize_config
    if isinstance(config, KernelQuantizeConfig) and config.owner:
        return config.owner
    return wrapper.layer.name


def resolve(model, names: Iterable[str] | str | None, kernels_only: bool = False) -> list:
    """The wrappers of ``model`` that ``names`` address (module docstring), in forward order;
    all of them for None.

    Args:
        model: a quantized model.
        names: layer names of the float model or of the quantized one, or None.
        kernels_only: consider the kernel layers' wrappers only.

    Returns:
        The wrappers.

    Raises:
        ValueError: a name addresses no quantized layer (the message lists those there are).
    """
    found = inspection.kernel_wrappers(model) if kernels_only else inspection.wrappers(model)
    if names is None:
        return found
    wanted = {names} if isinstance(names, str) else set(names)
    known = {w.layer.name for w in found} | {float_name(w) for w in found}
    unknown = sorted(wanted - known)
    if unknown:
        kind = "kernel layers" if kernels_only else "layers"
        raise ValueError(f"No quantized layers named {unknown}; quantized {kind}: "
                         f"{sorted(known)}")
    return [w for w in found if w.layer.name in wanted or float_name(w) in wanted]


def kernel_layer_names(model) -> list[str]:
    """The float model's names of the quantized kernel layers, in forward order (a split
    SeparableConv2D once)."""
    return list(dict.fromkeys(float_name(w) for w in inspection.kernel_wrappers(model)))


__all__ = ["float_name", "kernel_layer_names", "resolve"]
