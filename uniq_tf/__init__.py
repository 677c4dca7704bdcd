"""uniq_tf: UNIQ (Uniform Noise Injection for non-uniform Quantization) for tf_keras and TFMOT.

Importing this package sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads, when it is unset
(see _keras.py). ``uniq_tf.keras`` is the Keras 2 (tf_keras) module models must be built with.

The package, one idea per sub-package (each imports only those listed before it):
``util`` (checks, atomic files, the input convention, model walks), ``method`` (settings,
k-quantile math, codebooks, quantizers), ``integration`` (Keras/TFMOT: plan, apply, annotate,
scheme, inspection, modes, saving, the packed format), ``schedule`` (the gradual callback and
freezing), ``cost`` (bit widths, BOPs, allocation, plots), ``zoo`` (models and data), and the
training pipeline and commands (``training``, ``cli``). The public names are here; submodules
are attributes (``uniq_tf.models``, ``uniq_tf.data``, ...) imported on first use.
"""

import importlib as _importlib

from uniq_tf import _keras  # noqa: F401  (must run before anything imports TensorFlow)
from uniq_tf._keras import keras
from uniq_tf.cost.allocate import AllocationReport, allocate_bits
from uniq_tf.cost.bops import summary
from uniq_tf.cost.plots import plot_plan, plot_tradeoff
from uniq_tf.integration.annotate import quantize_annotate_layer, quantize_annotate_model
from uniq_tf.integration.apply import quantize_apply, quantize_model
from uniq_tf.integration.configs import LayerBits, quantize_scope
from uniq_tf.integration.inspection import (
    QuantizedModel,
    get_activation_ranges,
    get_codebooks,
    inspect_quantized,
    is_quantized_model,
    strip_quantization,
)
from uniq_tf.integration.modes import (
    activation_modes,
    calibrate_activations,
    set_activation_mode,
    set_grid_bits,
    set_weight_mode,
    weight_modes,
)
from uniq_tf.integration.packed import load_packed, save_packed
from uniq_tf.integration.registry import register_layer, unregister_layer
from uniq_tf.integration.scheme import UniqScheme
from uniq_tf.method.codebook import Codebook
from uniq_tf.method.quantizers import (
    ActMode,
    KQuantileWeightQuantizer,
    Mode,
    SwitchableActivationQuantizer,
)
from uniq_tf.method.settings import UniqSettings
from uniq_tf.schedule.gradual import GradualQuantization

__version__ = "0.1.0"

# Submodules by the names users reach them under, imported on first access (matplotlib, the
# training pipeline and the commands are heavy). The older flat names map to their modules.
_SUBMODULES = {
    "models": "uniq_tf.zoo.models",
    "data": "uniq_tf.zoo.data",
    "visualize": "uniq_tf.cost.visualize",
    "saving": "uniq_tf.integration.saving",
    "training": "uniq_tf.training",
    "cli": "uniq_tf.cli",
    "internals": "uniq_tf.internals",
    "allocate": "uniq_tf.cost.allocate",
    "bops": "uniq_tf.cost.bops",
    "plots": "uniq_tf.cost.plots",
    "callbacks": "uniq_tf.schedule.gradual",
    "kquantile": "uniq_tf.method.kquantile",
    "quantizers": "uniq_tf.method.quantizers",
    "settings": "uniq_tf.method.settings",
    "registry": "uniq_tf.integration.registry",
    "annotate": "uniq_tf.integration.annotate",
    "modes": "uniq_tf.integration.modes",
    "inputs": "uniq_tf.util.inputs",
    "atomic": "uniq_tf.util.atomic",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = _importlib.import_module(_SUBMODULES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'uniq_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


__all__ = [
    "ActMode",
    "AllocationReport",
    "Codebook",
    "GradualQuantization",
    "KQuantileWeightQuantizer",
    "LayerBits",
    "Mode",
    "QuantizedModel",
    "SwitchableActivationQuantizer",
    "UniqScheme",
    "UniqSettings",
    "activation_modes",
    "allocate_bits",
    "calibrate_activations",
    "get_activation_ranges",
    "get_codebooks",
    "inspect_quantized",
    "is_quantized_model",
    "keras",
    "load_packed",
    "plot_plan",
    "plot_tradeoff",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    "quantize_scope",
    "register_layer",
    "save_packed",
    "set_activation_mode",
    "set_grid_bits",
    "set_weight_mode",
    "strip_quantization",
    "summary",
    "unregister_layer",
    "weight_modes",
]
