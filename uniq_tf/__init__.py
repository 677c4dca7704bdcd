"""uniq_tf: UNIQ (Uniform Noise Injection for non-uniform Quantization) for tf_keras and TFMOT.

Importing this package sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads (see _keras.py).
"""

from uniq_tf import (  # noqa: F401  (submodules users reach as uniq_tf.models)
    _keras,  # noqa: F401  (must run before anything imports TensorFlow)
    data,
    models,
)
from uniq_tf.allocate import AllocationReport, allocate_bits
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

__version__ = "0.1.0"

__all__ = [
    "ActMode",
    "AllocationReport",
    "Codebook",
    "GradualQuantization",
    "KQuantileWeightQuantizer",
    "Mode",
    "SwitchableActivationQuantizer",
    "activation_modes",
    "allocate_bits",
    "calibrate_activations",
    "get_activation_ranges",
    "get_codebooks",
    "is_quantized_model",
    "plot_plan",
    "plot_tradeoff",
    "quantize_model",
    "quantize_scope",
    "set_activation_mode",
    "set_grid_bits",
    "set_weight_mode",
    "strip_quantization",
    "summary",
    "weight_modes",
]
