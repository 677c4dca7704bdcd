"""UNIQ as a TFMOT quantize scheme, for ``tfmot.quantization.keras.quantize_apply``.

TFMOT's ``quantize_apply`` removes the annotation wrappers, hands the scheme's layout transform
the model and its map of annotated layers, and wraps what the returned map names. UNIQ's
layout transform plans and splits exactly as ``uniq_tf.quantize_apply`` does
(:mod:`uniq_tf.integration.apply`); the registry then has nothing to add (layers that are not
annotated stay float). TFMOT does not enter nested models: a model nested inside another is
refused here with TFMOT's own message; ``uniq_tf.quantize_apply`` quantizes it.
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

from uniq_tf.integration import layout
from uniq_tf.integration import plan as planning
from uniq_tf.method.settings import UniqSettings
from uniq_tf.util import graph

_tfmot_keras = tfmot.quantization.keras
NESTED_MODEL_ERROR = (
    "Quantizing a keras Model inside another keras Model is not supported by "
    "tfmot.quantization.keras.quantize_apply (nested model {names}); uniq_tf.quantize_apply "
    "quantizes nested models."
)


class _Layout(_tfmot_keras.QuantizeLayoutTransform):
    """TFMOT's layout step: TFMOT's map of annotated layers -> UNIQ's plan, split."""

    def __init__(self, settings: UniqSettings):
        self._settings = settings

    def apply(self, model, layer_quantize_map):
        nested = graph.nested_models(model)
        if nested:
            raise ValueError(NESTED_MODEL_ERROR.format(names=[m.name for m in nested]))
        planning.check_float_model(model)
        names = {layer.name for layer in graph.layers(model)}
        # TFMOT adds the model's input layers with an empty entry: they are no layer to plan.
        annotations = {name: entry.get("quantize_config")
                       for name, entry in layer_quantize_map.items() if name in names}
        configs = planning.plan(model, annotations, self._settings)
        if not planning.has_kernel(configs):
            raise planning.no_kernel_error(model)
        model, configs = layout.split_separable(model, configs)
        return model, {name: {"quantize_config": config} for name, config in configs.items()}


class _NoRegistry(_tfmot_keras.QuantizeRegistry):
    """Every annotated layer gets its config from the layout step; TFMOT asks the registry
    only about layers that are not annotated, which stay float."""

    def supports(self, layer) -> bool:
        return False

    def get_quantize_config(self, layer):
        raise ValueError(f"uniq_tf quantizes annotated layers only, not {layer.name!r}")


class UniqScheme(_tfmot_keras.QuantizeScheme):
    """UNIQ as a TFMOT quantize scheme.

    Args:
        weight_bits, activation_bits: widths of the annotated layers that do not set their own
            (None: the settings').
        settings: a :class:`uniq_tf.UniqSettings` (None: the defaults).
        **options: other fields of :class:`uniq_tf.UniqSettings`, overriding ``settings``.

    Raises:
        TypeError: an option is not a setting.
        ValueError: a setting is out of range.
    """

    def __init__(
        self,
        weight_bits: int | None = None,
        activation_bits: int | None = None,
        *,
        settings: UniqSettings | None = None,
        **options,
    ):
        self.settings = UniqSettings.resolve(settings, weight_bits=weight_bits,
                                             activation_bits=activation_bits, **options)

    def get_layout_transformer(self):
        return _Layout(self.settings)

    def get_quantize_registry(self):
        return _NoRegistry()


__all__ = ["NESTED_MODEL_ERROR", "UniqScheme"]
