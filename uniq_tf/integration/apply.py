"""The one apply path: ``quantize_model`` and ``quantize_apply`` are the same operation.

Both end in :func:`quantize_annotated`: plan the annotated layers (:mod:`.plan`), split the
quantized SeparableConv2D layers (:mod:`.layout`), and wrap the planned layers in TFMOT's
``QuantizeWrapperV2``, in a copy of the model. ``quantize_model(model, ...)`` is
``quantize_apply(quantize_annotate_model(model), ...)`` with ``layer_bits`` and
``skip_layers`` in place of per-layer annotations. ``uniq_tf.UniqScheme`` plans and splits the
same way inside TFMOT's own ``quantize_apply`` (:mod:`.scheme`).

Unlike TFMOT's ``quantize_apply``, a Functional model nested inside another (a
keras.applications backbone) is quantized recursively instead of rejected (TFMOT #957).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from uniq_tf._keras import keras, require_keras2_model
from uniq_tf.integration import annotate, layout
from uniq_tf.integration import plan as planning
from uniq_tf.integration.configs import quantize_scope
from uniq_tf.method.settings import UniqSettings
from uniq_tf.util import graph


def quantize_annotated(model, annotations: Mapping, settings: UniqSettings):
    """The quantization-aware copy of the float ``model`` whose annotated layers
    (``annotations``: name -> LayerBits or None) are quantized with ``settings``.

    Raises:
        ValueError: the model is not a built graph model, is quantized already, holds NaN or
            inf weights, or no annotated layer has a kernel UNIQ quantizes.
    """
    planning.check_float_model(model)
    configs = planning.plan(model, annotations, settings)
    if not planning.has_kernel(configs):
        raise planning.no_kernel_error(model)
    with quantize_scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        copy, configs = layout.split_separable(copy, configs)

        def wrap(layer):
            config = configs.get(layer.name)
            if config is None:
                return layer
            return planning.QuantizeWrapper(layer, config, name_prefix="")

        return graph.clone(copy, wrap)


def quantize_model(
    model,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    *,
    layer_bits: Mapping[str, tuple[int | None, int | None]] | None = None,
    skip_layers: Iterable[str] = (),
    settings: UniqSettings | None = None,
    **options,
):
    """Returns a quantization-aware copy of ``model`` trained with UNIQ.

    Kernels of Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D and Dense layers (and types
    added with ``uniq_tf.register_layer``) get the k-quantile quantizer (2^weight_bits
    levels); the outputs of activations (ReLU, Activation, fused activations) get TFMOT's
    uniform moving-average quantizer at ``activation_bits``. A quantized SeparableConv2D ``N``
    becomes, as in TFMOT, a DepthwiseConv2D ``N_depthwise`` followed by a 1x1 Conv2D ``N``
    (same function; :mod:`uniq_tf.integration.layout`); the name ``N`` addresses both halves
    in ``layer_bits``, ``skip_layers``, the modes, grids and stages.
    Every weight quantizer starts in NOISY mode: without a schedule callback, all layers are
    trained with noise at once and evaluate with their codebooks (the paper's spirit).
    ``uniq_tf.GradualQuantization`` drives the stage-wise schedule.

    Args:
        model: a built tf_keras Sequential or Functional model (nested models allowed).
        weight_bits: codebook index width b, 1..16 (None: the settings', default 4).
        activation_bits: activation width, 2..16 (None: the settings', default 8).
        layer_bits: layer name -> (weight_bits, activation_bits) overrides; either may be None.
            The activation bits of a kernel layer apply to the activation quantizers that
            follow it until the next kernel layer.
        skip_layers: names of layers to leave in float (e.g. the first and last layer).
        settings: a :class:`uniq_tf.UniqSettings` (None: the defaults).
        **options: any other field of :class:`uniq_tf.UniqSettings` (``per_channel``,
            ``distribution``, ``noise``, ``high_noise``), overriding ``settings``.

    Returns:
        A new tf_keras model (the input model is not changed) whose quantized layers are
        TFMOT ``QuantizeWrapperV2`` layers named as before; compile and train it as usual.

    Raises:
        TypeError: ``model`` is not a tf_keras model (a Keras 3 model gets advice), or an
            option is not a setting.
        ValueError: the model is subclassed or unbuilt, holds NaN or inf weights, is already
            quantized, or has no layer UNIQ quantizes; a setting, ``layer_bits`` entry or
            ``skip_layers`` name is invalid (each error names the layer and the allowed values).
    """
    model = require_keras2_model(model)
    settings = UniqSettings.resolve(settings, weight_bits=weight_bits,
                                    activation_bits=activation_bits, **options)
    graph.check_graph_model(model)
    return quantize_annotated(model, planning.annotations_for(model, layer_bits, skip_layers),
                              settings)


def quantize_apply(
    model,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    *,
    settings: UniqSettings | None = None,
    **options,
):
    """Quantizes the annotated layers of ``model`` with UNIQ (every other layer stays float).

    Args:
        model: a tf_keras model holding layers annotated by ``uniq_tf.quantize_annotate_layer``
            or ``uniq_tf.quantize_annotate_model`` (inside nested models too).
        weight_bits, activation_bits: widths of the annotated layers that do not set their own
            (None: the settings').
        settings: a :class:`uniq_tf.UniqSettings` (None: the defaults).
        **options: other fields of :class:`uniq_tf.UniqSettings`, overriding ``settings``.

    Returns:
        The quantization-aware model, as :func:`quantize_model` returns it.

    Raises:
        TypeError: ``model`` is not a tf_keras model, or an option is not a setting.
        ValueError: nothing is annotated, a setting is out of range, or an annotation is not
            UNIQ's.
    """
    model = require_keras2_model(model)
    settings = UniqSettings.resolve(settings, weight_bits=weight_bits,
                                    activation_bits=activation_bits, **options)
    graph.check_graph_model(model)
    unwrapped, annotations = annotate.read_annotations(model)
    if not annotations:
        raise ValueError(
            f"model {model.name!r} has no annotated layer: annotate layers with "
            "uniq_tf.quantize_annotate_layer (or the whole model with "
            "uniq_tf.quantize_annotate_model) first, or call uniq_tf.quantize_model."
        )
    return quantize_annotated(unwrapped, annotations, settings)


__all__ = ["quantize_annotated", "quantize_apply", "quantize_model"]
