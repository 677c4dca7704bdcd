"""The methods UNIQ is measured against, built from the same trained float model.

Every builder returns a fresh model (the float model is copied first, never changed), with
quantizers in the same places as ``uniq_tf.quantize_model`` puts them: on the kernels of
Conv2D/Dense layers and on the outputs of ReLU layers (the model input stays float, batch norm
and biases stay float). Only the weight quantizer differs between methods, so an accuracy gap
is the weight quantizer's doing.

- ``uniform_qat``: TFMOT's own uniform weight quantizer, ``LastValueQuantizer`` (per output
  channel, symmetric, straight-through gradient). TFMOT's 8-bit scheme uses its narrow range,
  2^b - 1 levels (n = 2^(b-1) - 1, s_c = max|w_c| / n, w_q = s_c clip(round(w / s_c), -n, n)),
  which leaves 3 levels at 2 bits; its full range (``narrow_range=False``: 2^b levels, the
  range widened to [-2^(b-1), 2^(b-1) - 1] s_c) is clearly better there and slightly worse
  from 3 bits on (bench/findings.md), so :func:`narrow_range_for` picks the full range at
  2 bits and TFMOT's narrow range above. Activations go through the same
  quantizer UNIQ uses (TFMOT's ``MovingAverageQuantizer`` at the activation bits, behind
  uniq_tf's mode switch so that ``uniq_tf.calibrate_activations`` initializes its range the
  same way).
- ``clustered``: TFMOT weight clustering (``ClusterWeights``, 2^b centroids per kernel,
  k-means-style centroid updates) on every Conv2D/Dense kernel, with the same activation
  quantizer. TFMOT's own route to quantized activations after clustering (cluster-preserving
  QAT) is 8-bit only, so the activation quantizers are inserted here by the same wrapping
  (TFMOT's ``QuantizeWrapperV2``) that uniq_tf uses.
- ``set_uniform_ranges``: post-training uniform quantization of the weights (the ranges a
  LastValueQuantizer would record, set without training).
"""

from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot

from uniq_tf import internals
from uniq_tf._keras import keras, tf
from uniq_tf.integration import registry
from uniq_tf.integration.configs import ActivationQuantizeConfig
from uniq_tf.integration.inspection import QuantizeWrapper

_LastValueQuantizer = tfmot.quantization.keras.quantizers.LastValueQuantizer
_cluster = tfmot.clustering.keras
CLUSTER_INITS = {
    "density": _cluster.CentroidInitialization.DENSITY_BASED,
    "kmeans++": _cluster.CentroidInitialization.KMEANS_PLUS_PLUS,
}


class KernelOnlyConfig(tfmot.quantization.keras.QuantizeConfig):
    """A TFMOT QuantizeConfig that quantizes a layer's kernel and nothing else: subclasses
    give ``kernel_quantizer()`` and ``get_config()``."""

    def kernel_quantizer(self):
        raise NotImplementedError

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, self.kernel_quantizer())]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        del layer, quantize_activations

    def get_output_quantizers(self, layer):
        return []


class OutputOnlyConfig(tfmot.quantization.keras.QuantizeConfig):
    """A TFMOT QuantizeConfig that quantizes a layer's output and nothing else (none by
    default: the layer passes through): subclasses give ``get_output_quantizers(layer)``."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        del layer, quantize_weights

    def set_quantize_activations(self, layer, quantize_activations):
        del layer, quantize_activations

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="uniq_tf_bench")
class UniformKernelConfig(KernelOnlyConfig):
    """A kernel layer's kernel -> TFMOT LastValueQuantizer(bits, per-channel, symmetric)."""

    def __init__(self, bits: int, narrow_range: bool = True):
        self.bits = int(bits)
        self.narrow_range = bool(narrow_range)

    def kernel_quantizer(self):
        return _LastValueQuantizer(
            num_bits=self.bits, per_axis=True, symmetric=True, narrow_range=self.narrow_range
        )

    def get_config(self):
        return {"bits": self.bits, "narrow_range": self.narrow_range}


def copy_model(model):
    """A clone of ``model`` with its weights (builders wrap the copy's layers in place)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _is_kernel_layer(layer) -> bool:
    return registry.kernel_attributes(layer) == {"kernel": (-1,)}


def wrap(model, wrap_kernel, activation_bits: int | None, wrap_activation=None):
    """Clones ``model`` (a copy), wrapping kernel layers with ``wrap_kernel`` and ReLU layers
    in an activation quantizer (``wrap_activation``, by default uniq_tf's at
    ``activation_bits``), reusing every other layer."""

    def clone(layer):
        if _is_kernel_layer(layer):
            return wrap_kernel(layer)
        if activation_bits is not None and registry.is_activation_layer(layer):
            if wrap_activation is not None:
                return wrap_activation(layer)
            return QuantizeWrapper(layer, ActivationQuantizeConfig(activation_bits), name_prefix="")
        return layer

    with tfmot.quantization.keras.quantize_scope():
        return keras.models.clone_model(copy_model(model), clone_function=clone)


def narrow_range_for(weight_bits: int) -> bool:
    """The better of TFMOT's two symmetric ranges in our runs: full below 3 bits, else narrow."""
    return weight_bits >= 3


def uniform_qat(model, weight_bits: int, activation_bits: int, narrow_range: bool | None = None):
    """Uniform QAT with TFMOT's quantizers (see the module docstring)."""
    if narrow_range is None:
        narrow_range = narrow_range_for(weight_bits)
    config = UniformKernelConfig(weight_bits, narrow_range)
    return wrap(
        model, lambda layer: QuantizeWrapper(layer, config, name_prefix=""), activation_bits
    )


def set_uniform_ranges(model) -> None:
    """Sets every LastValueQuantizer's per-channel range to the symmetric range of its current
    kernel, range_c = max|w_c| (narrow) or the two's-complement widening TFMOT applies
    otherwise, as one training step would record it."""
    for layer in model.layers:
        if not isinstance(layer, QuantizeWrapper):
            continue
        config = layer.quantize_config
        if not isinstance(config, UniformKernelConfig):
            continue
        for weight, _, variables in internals.wrapper_weight_vars(layer):
            axes = tuple(range(weight.shape.rank - 1))
            w = weight.numpy()
            lo, hi = w.min(axis=axes), w.max(axis=axes)
            if config.narrow_range:
                ratio = -1.0
            else:
                ratio = -((1 << config.bits) - 2) / (1 << config.bits)
            variables["min_var"].assign(np.minimum(lo, hi / ratio))
            variables["max_var"].assign(np.maximum(hi, lo * ratio))


def _enough_weights(layer, clusters: int) -> bool:
    return int(np.prod(layer.kernel.shape)) > clusters


def clustered(model, weight_bits: int, activation_bits: int | None, init: str = "density"):
    """TFMOT weight clustering with 2^weight_bits clusters per kernel plus activation
    quantizers (see the module docstring). Kernels with no more weights than clusters stay
    float, as ``tfmot.clustering.keras.cluster_weights`` leaves them (they hold fewer than
    2^b distinct values anyway)."""
    if init not in CLUSTER_INITS:
        raise ValueError(f"init must be one of {sorted(CLUSTER_INITS)}, got {init!r}")
    clusters = 2**weight_bits

    def wrap_kernel(layer):
        if not _enough_weights(layer, clusters):
            return layer
        return _cluster.cluster_weights(
            layer, number_of_clusters=clusters, cluster_centroids_init=CLUSTER_INITS[init]
        )

    return wrap(model, wrap_kernel, activation_bits)


def distinct_kernel_values(model) -> dict[str, int]:
    """Layer name -> distinct values of its kernel in the inference forward pass: in the whole
    kernel for clustering (one codebook per kernel), in the worst output channel for uniform
    QAT (one scale per channel). For checking that a method delivers its 2^b levels."""
    from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper

    out = {}
    for layer in model.layers:
        if isinstance(layer, cluster_wrapper.ClusterWeights):
            layer.update_clustered_weights_associations()
            out[layer.layer.name] = int(np.unique(layer.layer.kernel.numpy()).size)
        elif isinstance(layer, QuantizeWrapper) and isinstance(
            layer.quantize_config, UniformKernelConfig
        ):
            weight, quantizer, variables = internals.wrapper_weight_vars(layer)[0]
            kernel = tf.convert_to_tensor(quantizer(weight, False, variables)).numpy()
            channels = kernel.reshape(-1, kernel.shape[-1]).T
            out[layer.layer.name] = max(int(np.unique(c).size) for c in channels)
    return out
