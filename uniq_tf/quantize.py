"""Public entry points: quantize_model, quantize_scope, strip_quantization, get_codebooks.

``quantize_model`` plans, per layer, which UNIQ config it gets (registry), then applies the plan
by cloning the model and wrapping layers in TFMOT's QuantizeWrapperV2, the way TFMOT's own
``quantize_apply`` does, with one difference users ask for (TFMOT #957): a Functional model
nested inside another (a keras.applications backbone) is quantized recursively instead of
rejected.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow_model_optimization as tfmot

from uniq_tf import internals, kquantile, registry
from uniq_tf._keras import keras, require_keras2_model, tf
from uniq_tf.quantize_config import ActivationQuantizeConfig, KernelQuantizeConfig
from uniq_tf.quantizers import (
    KQuantileWeightQuantizer,
    SwitchableActivationQuantizer,
    check_grid_bits,
)
from uniq_tf.save_format import warn_on_keras_format
from uniq_tf.scheme import UniqQuantizeScheme

QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapperV2
WEIGHT_BITS_RANGE = (1, 16)
ACTIVATION_BITS_RANGE = (2, 16)
HIGH_NOISE_SCALE = 2.0


def _check_bits(value, allowed: tuple[int, int], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer in {allowed[0]}..{allowed[1]}, got {value!r}")
    if not allowed[0] <= value <= allowed[1]:
        raise ValueError(f"{what} must be in {allowed[0]}..{allowed[1]}, got {value}")
    return int(value)


def _is_nested_model(layer) -> bool:
    return isinstance(layer, keras.Model)


def _check_graph_model(model, where: str) -> None:
    if not isinstance(model, keras.Sequential) and not internals.is_graph_network(model):
        raise ValueError(
            f"{where} is a subclassed tf_keras.Model ({type(model).__name__}); uniq_tf can "
            "quantize Sequential and Functional models only. Rebuild it with the Functional API."
        )
    if not model.built:
        raise ValueError(
            f"{where} is not built; call `model.build(input_shape)` or give it an Input first."
        )


def flatten_layers(model) -> list:
    """The model's layers in forward order, descending into nested models (not listed)."""
    out = []
    for layer in model.layers:
        if _is_nested_model(layer):
            out.extend(flatten_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def check_finite_weights(model) -> None:
    """Raises ValueError naming every layer of ``model`` whose float weights hold NaN or inf."""
    bad = [
        f"{layer.name!r} ({weight.name})"
        for layer in flatten_layers(model)
        for weight in layer.weights
        if weight.dtype.is_floating and not np.isfinite(weight.numpy()).all()
    ]
    if bad:
        raise ValueError(
            f"Model {model.name!r} has non-finite weights (NaN or inf) in layer(s) "
            f"{', '.join(bad)}; their codebooks and outputs would be NaN. Restore them from a "
            "good checkpoint (or retrain: training diverged) before quantizing or exporting."
        )


def _plan(
    model, weight_bits, activation_bits, layer_bits, skip_layers, per_channel, distribution,
    noise_scale, noise,
) -> dict:
    """Layer name -> QuantizeConfig, in forward order."""
    plan: dict = {}
    owner = None
    owner_act_bits = activation_bits
    not_quantized = []
    for layer in flatten_layers(model):
        name = layer.name
        w_bits, a_bits = layer_bits.get(name, (None, None))
        attrs = registry.kernel_attributes(layer)
        if name in skip_layers:
            continue
        if attrs is not None:
            w_bits = weight_bits if w_bits is None else w_bits
            a_bits = activation_bits if a_bits is None else a_bits
            quantizers = {
                attr: KQuantileWeightQuantizer(
                    w_bits, axes if per_channel else None, distribution, noise_scale,
                    noise=noise,
                )
                for attr, axes in attrs.items()
            }
            out_bits = a_bits if registry.has_quantized_output(layer) else None
            plan[name] = KernelQuantizeConfig(quantizers, out_bits, owner=name)
            owner, owner_act_bits = name, a_bits
        elif registry.is_activation_layer(layer):
            bits = owner_act_bits if a_bits is None else a_bits
            plan[name] = ActivationQuantizeConfig(bits, owner=owner)
        elif layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
            not_quantized.append(f"{name} ({type(layer).__name__})")
    if not_quantized:
        warnings.warn(
            "uniq_tf leaves these layers in float (no UNIQ config for their type): "
            + ", ".join(not_quantized),
            stacklevel=3,
        )
    return plan


def _apply(model, quantize_registry):
    """Clones ``model`` reusing its layers, wrapping those the registry supports."""

    def wrap(layer):
        if _is_nested_model(layer):
            return _apply(layer, quantize_registry)
        if quantize_registry.supports(layer):
            config = quantize_registry.get_quantize_config(layer)
            return QuantizeWrapper(layer, config, name_prefix="")
        return layer

    return keras.models.clone_model(model, clone_function=wrap)


def _copy_with_weights(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _check_override_target(layer, pair) -> None:
    """A bit override must name a layer whose bits it can set (else it would do nothing)."""
    kind = type(layer).__name__
    if registry.kernel_attributes(layer) is not None:
        return
    if registry.is_activation_layer(layer):
        if pair[0] is not None:
            raise ValueError(
                f"layer_bits[{layer.name!r}] sets weight bits {pair[0]}, but {layer.name!r} is an "
                f"activation layer ({kind}) without weights; use (None, activation_bits)."
            )
        return
    raise ValueError(
        f"layer_bits names {layer.name!r} ({kind}), which UNIQ does not quantize; it applies to "
        f"kernel layers ({', '.join(t.__name__ for t in registry.kernel_layer_types())}) and to "
        "ReLU/Activation layers (activation bits only)."
    )


def check_layer_overrides(
    model, layer_bits: Mapping | None, skip_layers: Iterable[str] | str
) -> tuple[dict[str, tuple[int | None, int | None]], set[str]]:
    """``layer_bits`` and ``skip_layers`` of :func:`quantize_model`, checked against the layers
    of ``model``: ({name: (weight_bits or None, activation_bits or None)}, {skipped names})."""
    layer_bits = dict(layer_bits or {})
    skip_layers = {skip_layers} if isinstance(skip_layers, str) else set(skip_layers)
    names = [layer.name for layer in flatten_layers(model)]
    unknown = sorted((set(layer_bits) | skip_layers) - set(names))
    if unknown:
        raise ValueError(
            f"Unknown layer names {unknown} in layer_bits/skip_layers of model {model.name!r}. "
            f"Layers are: {names}"
        )
    by_name = {layer.name: layer for layer in flatten_layers(model)}
    checked = {}
    for name, pair in layer_bits.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"layer_bits[{name!r}] must be a pair (weight_bits, activation_bits), got {pair!r}"
            )
        _check_override_target(by_name[name], pair)
        ranges = (WEIGHT_BITS_RANGE, ACTIVATION_BITS_RANGE)
        checked[name] = tuple(
            None if b is None else _check_bits(b, allowed, f"layer_bits[{name!r}][{i}]")
            for i, (b, allowed) in enumerate(zip(pair, ranges, strict=True))
        )
    return checked, skip_layers


def check_settings(weight_bits, activation_bits, distribution: str, noise: str) -> tuple:
    """The model-wide settings of :func:`quantize_model` (and of ``uniq_tf.UniqScheme``):
    (weight_bits, activation_bits) as ints, or a ValueError naming the setting and the allowed
    values."""
    weight_bits = _check_bits(weight_bits, WEIGHT_BITS_RANGE, "weight_bits")
    activation_bits = _check_bits(activation_bits, ACTIVATION_BITS_RANGE, "activation_bits")
    if distribution not in kquantile.DISTRIBUTIONS:
        raise ValueError(
            f"distribution must be one of {kquantile.DISTRIBUTIONS}, got {distribution!r}"
        )
    kquantile.check_noise(noise)
    return weight_bits, activation_bits


def quantize_model(
    model,
    weight_bits: int = 4,
    activation_bits: int = 8,
    layer_bits: Mapping[str, tuple[int | None, int | None]] | None = None,
    skip_layers: Iterable[str] = (),
    per_channel: bool = False,
    distribution: str = "gaussian",
    high_noise: bool = False,
    noise: str = kquantile.CLIPPED,
):
    """Returns a quantization-aware copy of ``model`` trained with UNIQ.

    Kernels of Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D and Dense layers get the
    k-quantile quantizer (2^weight_bits levels); the outputs of activations (ReLU, Activation,
    fused activations) get TFMOT's uniform moving-average quantizer at ``activation_bits``.
    A quantized SeparableConv2D ``N`` becomes, as in TFMOT, a DepthwiseConv2D ``N_depthwise``
    followed by a 1x1 Conv2D ``N`` (same function; see :mod:`uniq_tf.scheme`): its codebooks,
    modes and stages are those two layers'. ``layer_bits`` and ``skip_layers`` name the
    layers of ``model``: ``layer_bits[N]`` sets both halves (the activation bits, the
    pointwise half's), and a skipped SeparableConv2D stays whole, in float.
    Its ``save`` warns when it writes the .keras format, which cannot load it back (save as
    .h5 or SavedModel; load with ``uniq_tf.saving.load_quantized``).
    Every weight quantizer starts in NOISY mode: without a schedule callback, all layers are
    trained with noise at once and evaluate with their codebooks (the paper's spirit).
    ``uniq_tf.callbacks.GradualQuantization`` drives the stage-wise schedule.

    Args:
        model: a built tf_keras Sequential or Functional model (nested models allowed).
        weight_bits: codebook index width b, 1..16.
        activation_bits: activation width, 2..16.
        layer_bits: layer name -> (weight_bits, activation_bits) overrides; either may be None.
            The activation bits of a kernel layer apply to the activation quantizers that
            follow it until the next kernel layer.
        skip_layers: names of layers to leave in float (e.g. the first and last layer).
        per_channel: fit the CDF per output channel instead of per tensor.
        distribution: "gaussian" (the paper) or "empirical" (exact quantiles of the weights).
        high_noise: noise of +-1/k instead of +-1/(2k) (the reference code's variant).
        noise: the training noise model (docs/method.md, "Noise models"): "clipped" (default:
            u + e clipped to [1/(2k), 1 - 1/(2k)], so the noisy weight stays within the outer
            codebook levels; measured better than the paper's at 2-4 bits, docs/benchmarks.md
            section 4), "paper" (the paper's noise, u + e clipped to [1e-5, 1 - 1e-5]) or
            "bin_matched" (additive noise drawn from the hard quantizer's error in the
            weight's bin).

    Returns:
        A new tf_keras model (the input model is not changed) whose quantized layers are
        TFMOT ``QuantizeWrapperV2`` layers named as before; compile and train it as usual.

    Raises:
        TypeError: ``model`` is not a tf_keras model (a Keras 3 model gets advice).
        ValueError: the model is subclassed or unbuilt, holds NaN or inf weights, is already
            quantized, or has no layer UNIQ quantizes; a bit width, ``distribution``, ``noise``,
            ``layer_bits`` entry or ``skip_layers`` name is invalid (each error names the
            layer and the allowed values).
    """
    model = require_keras2_model(model)
    _check_graph_model(model, f"model {model.name!r}")
    for layer in model.layers:
        if _is_nested_model(layer):
            _check_graph_model(layer, f"nested model {layer.name!r}")
    check_finite_weights(model)
    weight_bits, activation_bits = check_settings(
        weight_bits, activation_bits, distribution, noise)
    checked, skip_layers = check_layer_overrides(model, layer_bits, skip_layers)
    plan = _plan(
        model, weight_bits, activation_bits, checked, skip_layers, per_channel, distribution,
        HIGH_NOISE_SCALE if high_noise else 1.0, noise,
    )
    if not any(isinstance(c, KernelQuantizeConfig) for c in plan.values()):
        if is_quantized_model(model):
            raise ValueError(
                f"Model {model.name!r} is already quantized (it holds UNIQ QuantizeWrapperV2 "
                "layers); quantize the float model once, or keep training this one."
            )
        raise ValueError(
            f"Model {model.name!r} has no layer UNIQ can quantize (supported: "
            f"{', '.join(t.__name__ for t in registry.kernel_layer_types())}), after skip_layers."
        )
    with quantize_scope():
        copy = _copy_with_weights(model)
        # The layout splits quantized SeparableConv2D layers, and their plan entries with them.
        copy, plan = UniqQuantizeScheme(plan).get_layout_transformer().apply(copy, plan)
        quantized = _apply(copy, UniqQuantizeScheme(plan).get_quantize_registry())

    return warn_on_keras_format(quantized)


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
    }
    for extra in args:
        custom.update(extra)
    return tfmot.quantization.keras.quantize_scope(custom)


# ---------------------------------------------------------------- introspection


def wrappers(model) -> list:
    """The QuantizeWrapperV2 layers of a quantized model, in forward order (nested included)."""
    out = []
    for layer in model.layers:
        if _is_nested_model(layer):
            out.extend(wrappers(layer))
        elif isinstance(layer, QuantizeWrapper):
            out.append(layer)
    return out


def kernel_wrappers(model) -> list:
    return [w for w in wrappers(model) if isinstance(w.quantize_config, KernelQuantizeConfig)]


def kernel_wrappers_by_layer(model) -> dict[str, list]:
    """The kernel wrappers of a quantized model by the layer of the float model they quantize:
    both halves of a split SeparableConv2D under its name (the depthwise half's config names
    it as owner), every other kernel layer alone under its own name."""
    out: dict[str, list] = {}
    for wrapper in kernel_wrappers(model):
        out.setdefault(wrapper.quantize_config.owner or wrapper.layer.name, []).append(wrapper)
    return out


def weight_quantizers(wrapper) -> list[tuple[str, KQuantileWeightQuantizer, dict]]:
    """(attribute, quantizer, its variables) for each quantized kernel of ``wrapper``."""
    config = wrapper.quantize_config
    if not isinstance(config, KernelQuantizeConfig):
        return []
    attrs = list(config.weight_quantizers)
    return [
        (attr, quantizer, variables)
        for attr, (_, quantizer, variables) in zip(
            attrs, internals.wrapper_weight_vars(wrapper), strict=False)
    ]


def output_quantizers(wrapper) -> list[tuple[SwitchableActivationQuantizer, dict]]:
    """(quantizer, its variables) of ``wrapper``'s output; TFMOT supports at most one."""
    quantizers = internals.wrapper_output_quantizers(wrapper)
    if not quantizers or not isinstance(quantizers[0], SwitchableActivationQuantizer):
        return []
    return [(quantizers[0], internals.wrapper_output_quantizer_vars(wrapper))]


def float_kernel(wrapper, attr: str = "kernel") -> tf.Variable:
    """The float variable behind a quantized kernel attribute (``wrapper.layer.<attr>`` holds the
    quantized tensor of the last call instead)."""
    names = wrapper.quantize_config.weight_quantizers
    for (variable, _, _), name in zip(internals.wrapper_weight_vars(wrapper), names, strict=True):
        if name == attr:
            return variable
    raise KeyError(f"layer {wrapper.layer.name!r} has no quantized weight {attr!r}")


def is_quantized_model(model) -> bool:
    """True when ``model`` holds at least one UNIQ-quantized kernel layer.

    Args:
        model: a tf_keras model.

    Returns:
        Whether ``uniq_tf.quantize_model`` (or ``quantize_apply``) made it.
    """
    return bool(kernel_wrappers(model))


@dataclass
class Codebook:
    """One quantized kernel: its codebook and every weight's index into it.

    levels: (k,) per tensor, or (C, k) per output channel (C = rows of the statistics).
    indices: int32, the kernel's shape, each weight's bin in 0..k-1.
    grid_bits: the integer grid width B the levels are snapped to (the quantizer's
    ``grid_bits``), or None.
    Per tensor, ``levels[indices]`` equals the stripped kernel exactly; :meth:`dequantize`
    handles both cases.
    """

    layer: str
    weight: str
    bits: int
    levels: np.ndarray
    indices: np.ndarray
    channel_axes: tuple[int, ...] | None
    distribution: str
    grid_bits: int | None = None

    @property
    def size(self) -> int:
        return 2**self.bits

    def dequantize(self) -> np.ndarray:
        if self.levels.ndim == 1:
            return self.levels[self.indices]
        rows, back = kquantile.to_rows(tf.constant(self.indices), self.channel_axes)
        values = np.take_along_axis(self.levels, rows.numpy(), axis=1)
        return back(tf.constant(values)).numpy()


def _codebook_key(wrapper, attr) -> str:
    return wrapper.layer.name if attr in ("kernel",) or len(
        wrapper.quantize_config.weight_quantizers) == 1 else f"{wrapper.layer.name}/{attr}"


def get_codebooks(model) -> dict[str, Codebook]:
    """The codebook of every quantized kernel, computed from its float weights.

    Args:
        model: a quantized model.

    Returns:
        Key -> :class:`Codebook` (levels and every weight's index), in forward order. The key is
        the layer name, or "layer/attribute" for a layer with two quantized kernels (a wrapped
        SeparableConv2D of a model saved before uniq_tf split them).

    Raises:
        ValueError: a quantized kernel holds NaN or inf (the error names the layer).
    """
    model = require_keras2_model(model)
    check_finite_weights(model)
    out = {}
    for wrapper in kernel_wrappers(model):
        for attr, quantizer, _ in weight_quantizers(wrapper):
            kernel = float_kernel(wrapper, attr)
            levels, indices = kquantile.codebook(
                kernel, quantizer.bits, quantizer.channel_axes, quantizer.distribution,
                quantizer.grid_bits,
            )
            out[_codebook_key(wrapper, attr)] = Codebook(
                wrapper.layer.name, attr, quantizer.bits, levels, indices.astype(np.int32),
                quantizer.channel_axes, quantizer.distribution, quantizer.grid_bits,
            )
    return out


def set_grid_bits(model, bits: int | None, layers: Iterable[str] | None = None) -> dict:
    """Snaps the hard codebooks of ``layers`` (all quantized layers when None) to their
    ``bits``-bit integer grid (``KQuantileWeightQuantizer.grid_bits``), or back when None.

    For grid-aware fine-tuning before an FPGA export: set it, put the weights in QUANTIZED
    mode (``set_weight_mode``), train the last epochs, then ``fpga_export.export_finn`` uses
    the same grids and its graph computes what the Keras model computes. The setting is saved
    with the model. The model's compiled train/test/predict functions are reset so the next
    ``fit``/``evaluate``/``predict`` traces the new forward pass (no recompile needed).

    Args:
        model: a quantized model (``quantize_model``).
        bits: the grid width B, at least max(b, 2) for every selected layer and at most 16;
            None removes the snapping.
        layers: names of quantized layers, or None for all.

    Returns:
        Codebook key -> the grid width now set.

    Raises:
        ValueError: an unknown layer name, or ``bits`` narrower than a layer's codebook (the
            message names the layer and the allowed widths).
    """
    selected = kernel_wrappers(model)
    if layers is not None:
        wanted = {layers} if isinstance(layers, str) else set(layers)
        names = {w.layer.name for w in selected}
        unknown = sorted(wanted - names)
        if unknown:
            raise ValueError(f"No quantized layers named {unknown}; quantized layers: "
                             f"{sorted(names)}")
        selected = [w for w in selected if w.layer.name in wanted]
    quantizers = [(_codebook_key(w, attr), q) for w in selected
                  for attr, q, _ in weight_quantizers(w)]
    for key, quantizer in quantizers:
        check_grid_bits(bits, quantizer.bits, f"grid bits of layer {key!r}")
    for _, quantizer in quantizers:
        quantizer.grid_bits = None if bits is None else int(bits)
    model.train_function = model.test_function = model.predict_function = None
    return {key: quantizer.grid_bits for key, quantizer in quantizers}


def get_activation_ranges(model) -> dict[str, tuple[float, float, int]]:
    """The ranges the activation quantizers learned (or were calibrated to).

    Args:
        model: a quantized model.

    Returns:
        Layer name -> (min, max, bits) of its activation quantizer.
    """
    out = {}
    for wrapper in wrappers(model):
        for quantizer, variables in output_quantizers(wrapper):
            out[wrapper.layer.name] = (
                float(variables["min_var"].numpy()), float(variables["max_var"].numpy()),
                quantizer.bits,
            )
    return out


def strip_quantization(model):
    """The deployable float model: hard quantization, whatever mode the layers were in.

    Args:
        model: a quantized model.

    Returns:
        A plain tf_keras model with the same layer names whose quantized kernels hold exactly
        their codebook values, activations in float, and every other weight copied. The base
        of every exporter.

    Raises:
        ValueError: ``model`` has no quantized layer, or a quantized kernel holds NaN or inf.
    """
    model = require_keras2_model(model)
    if not is_quantized_model(model):
        raise ValueError(
            f"Model {model.name!r} has no UNIQ-quantized layer; call uniq_tf.quantize_model first."
        )
    codebooks = get_codebooks(model)
    with quantize_scope():
        return _strip(model, codebooks)


def _strip(model, codebooks):
    def unwrap(layer):
        if _is_nested_model(layer):
            return _strip(layer, codebooks)
        if isinstance(layer, QuantizeWrapper):
            return layer.layer.__class__.from_config(layer.layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    stripped = keras.models.clone_model(model, clone_function=unwrap)
    _copy_stripped_weights(model, stripped, codebooks)
    return stripped


def _copy_stripped_weights(model, stripped, codebooks):
    for source in model.layers:
        if isinstance(source, keras.layers.InputLayer):
            continue
        target = stripped.get_layer(source.name)
        if _is_nested_model(source):
            _copy_stripped_weights(source, target, codebooks)
            continue
        if not isinstance(source, QuantizeWrapper):
            target.set_weights(source.get_weights())
            continue
        inner = source.layer
        kernels = {}
        if isinstance(source.quantize_config, KernelQuantizeConfig):
            for attr, _, _ in weight_quantizers(source):
                kernels[attr] = codebooks[_codebook_key(source, attr)].dequantize()
        values = []
        for weight in target.weights:
            attr = weight.name.split("/")[-1].split(":")[0]
            values.append(kernels[attr] if attr in kernels else getattr(inner, attr).numpy())
        target.set_weights(values)
