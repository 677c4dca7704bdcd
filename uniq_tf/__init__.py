"""uniq_tf: UNIQ (Uniform Noise Injection for non-uniform Quantization) for tf_keras and TFMOT.

Importing this package sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads, when it is unset
(see _keras.py). ``uniq_tf.keras`` is the Keras 2 (tf_keras) module models must be built with.
Submodules are attributes (``uniq_tf.models``, ``uniq_tf.visualize``, ...); the heavier ones
are imported on first use.
"""

import importlib as _importlib

from uniq_tf import (  # noqa: F401  (submodules users reach as uniq_tf.models)
    _keras,  # noqa: F401  (must run before anything imports TensorFlow)
    data,
    models,
)
from uniq_tf._keras import keras
from uniq_tf.allocate import AllocationReport, allocate_bits
from uniq_tf.annotate import (
    LayerBits,
    UniqScheme,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
)
from uniq_tf.bops import summary
from uniq_tf.callbacks import GradualQuantization
from uniq_tf.modes import (
    activation_modes,
    calibrate_activations,
    set_activation_mode,
    set_weight_mode,
    weight_modes,
)
from uniq_tf.plots import plot_plan, plot_tradeoff
from uniq_tf.quantize import (
    Codebook,
    get_activation_ranges,
    get_codebooks,
    is_quantized_model,
    quantize_model,
    quantize_scope,
    set_grid_bits,
    strip_quantization,
)
from uniq_tf.quantizers import (
    ActMode,
    KQuantileWeightQuantizer,
    Mode,
    SwitchableActivationQuantizer,
)
from uniq_tf.registry import register_layer, unregister_layer

__version__ = "0.1.0"

# Imported on first access (matplotlib, the training pipeline and the commands are heavy).
_LAZY_SUBMODULES = ("cli", "internals", "saving", "training", "visualize")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        module = _importlib.import_module(f"uniq_tf.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'uniq_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "ActMode",
    "AllocationReport",
    "Codebook",
    "GradualQuantization",
    "KQuantileWeightQuantizer",
    "LayerBits",
    "Mode",
    "SwitchableActivationQuantizer",
    "UniqScheme",
    "activation_modes",
    "allocate_bits",
    "calibrate_activations",
    "get_activation_ranges",
    "get_codebooks",
    "is_quantized_model",
    "keras",
    "plot_plan",
    "plot_tradeoff",
    "register_layer",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    "quantize_scope",
    "set_activation_mode",
    "set_grid_bits",
    "set_weight_mode",
    "strip_quantization",
    "summary",
    "unregister_layer",
    "weight_modes",
]
