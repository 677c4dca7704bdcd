"""LSQ, learned step size quantization (Esser et al., "Learned Step Size Quantization",
ICLR 2020): the uniform peer whose step sizes are trained with the network.

A tensor v is quantized to b bits with a trainable step s:

    v_hat = round(clip(v / s, -Q_N, Q_P)) * s
    signed (weights):                     Q_N = 2^(b-1), Q_P = 2^(b-1) - 1
    unsigned (activations after a ReLU):  Q_N = 0,       Q_P = 2^b - 1

Backward, as in the paper: round is straight through, so

    d v_hat / d v = 1 where -Q_N <= v / s <= Q_P, else 0
    d v_hat / d s = round(v / s) - v / s inside the range, -Q_N below it, Q_P above it

and the gradient reaching s is scaled by g = 1 / sqrt(N Q_P), N the number of values the step
serves: the weights of the layer for a weight step (of one output channel, per channel), the
features of one example for an activation step. The forward pass is the same in training and
inference.

Initialization (the paper's): s = 2 mean(|v|) / sqrt(Q_P), over the kernel for a weight step
(per channel: over the output channel's weights; set on the quantizer's first call, whatever
the mode, as it needs only the kernel) and over the first batch seen in training for an
activation step (before that batch, inference runs with s = 1).

Per tensor is the paper's choice and the low-bit suite's: one step per kernel and one per
activation tensor. ``per_channel=True`` gives a kernel one step per output channel.

:func:`lsq_model` puts the quantizers where bench/peers.py puts every peer's: on the kernel of
every Conv2D/Dense layer (at the weight bits, the first and last layer included, which the
paper keeps at 8 bits) and on the output of every ReLU layer; the model input, biases and batch
norm stay float.
"""

from __future__ import annotations

import math
import numbers

import tensorflow_model_optimization as tfmot

from bench import peers
from uniq_tf._keras import keras, tf
from uniq_tf.integration import registry

_Quantizer = tfmot.quantization.keras.quantizers.Quantizer
_QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapperV2  # uniq_tf's QuantizeWrapper

STEP_VARIABLE = "lsq_step"
INITIALIZED_VARIABLE = "lsq_initialized"
# Floor of an initial step: an all-zero kernel or first batch would otherwise give s = 0.
MIN_STEP = 1e-8


def levels(bits: int, signed: bool) -> tuple[int, int]:
    """(Q_N, Q_P) of a b-bit grid: (2^(b-1), 2^(b-1) - 1) signed, (0, 2^b - 1) unsigned.

    Args:
        bits: the width b, at least 2 signed (Q_P >= 1) and 1 unsigned.
        signed: a grid symmetric about 0 (weights) or from 0 up (activations after a ReLU).

    Returns:
        (Q_N, Q_P): the grid holds the integers -Q_N..Q_P.

    Raises:
        ValueError: ``bits`` not an integer from the smallest width for ``signed`` to 16.
    """
    low = 2 if signed else 1
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not low <= bits <= 16:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"LSQ {kind} bits must be an integer in {low}..16, got {bits!r}")
    bits = int(bits)
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def quantize(v: tf.Tensor, step: tf.Tensor, q_n: int, q_p: int, grad_scale) -> tf.Tensor:
    """v_hat = round(clip(v / s, -Q_N, Q_P)) * s, round straight through, dL/ds scaled by g.

    Args:
        v: the tensor.
        step: s, broadcastable to ``v``.
        q_n, q_p: the grid's bounds (:func:`levels`).
        grad_scale: g, the factor on the gradient reaching ``step``.

    Returns:
        v_hat, exactly s times an integer of -Q_N..Q_P.
    """
    # The value of s exactly, the gradient g ds: the usual s g + stop_gradient(s - s g) can
    # round to a neighbour of s, and then v_hat is no longer on the grid s * integers.
    s = tf.stop_gradient(step) + grad_scale * (step - tf.stop_gradient(step))
    x = tf.clip_by_value(v / s, -float(q_n), float(q_p))
    x = x + tf.stop_gradient(tf.round(x) - x)
    return x * s


def initial_step(v: tf.Tensor, q_p: int, axis=None) -> tf.Tensor:
    """The paper's initial step, 2 mean(|v|) / sqrt(Q_P), the mean over ``axis`` (None: all).

    Args:
        v: the tensor (a kernel, or a batch of activations).
        q_p: Q_P of the grid.
        axis: the axes to average over; None for one step per tensor.

    Returns:
        The step(s), at least ``MIN_STEP``; no gradient flows through them.
    """
    v = tf.stop_gradient(tf.cast(v, tf.float32))
    mean = tf.reduce_mean(tf.abs(v), axis=axis)
    return tf.maximum(2.0 * mean / math.sqrt(q_p), MIN_STEP)


def _add_step_variables(layer, name: str, shape) -> dict:
    return {
        "step": layer.add_weight(
            f"{name}_{STEP_VARIABLE}", shape=shape, dtype=tf.float32, trainable=True,
            initializer=keras.initializers.Constant(1.0),
        ),
        # 0 until the step is set from data; saved with the model, so a loaded model keeps its
        # trained step instead of initializing it again.
        "initialized": layer.add_weight(
            f"{name}_{INITIALIZED_VARIABLE}", shape=(), dtype=tf.int32, trainable=False,
            initializer=keras.initializers.Zeros(),
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        ),
    }


def _initialized_step(variables: dict, initial_value) -> tf.Tensor:
    """The step's value, first set to ``initial_value()`` if it was never set. A variable
    flag and a tf.cond, so a traced train function initializes on its first batch only."""
    step, initialized = variables["step"], variables["initialized"]

    def initialize():
        with tf.control_dependencies([step.assign(initial_value()), initialized.assign(1)]):
            return tf.constant(True)

    done = tf.cond(initialized > 0, lambda: tf.constant(False), initialize)
    with tf.control_dependencies([done]):
        return step.read_value()


@keras.utils.register_keras_serializable(package="uniq_tf_bench")
class LsqWeightQuantizer(_Quantizer):
    """LSQ on a kernel, signed: w_hat = round(clip(w / s, -2^(b-1), 2^(b-1) - 1)) * s.

    The step gradient is scaled by g = 1 / sqrt(N Q_P), N the weights per step; s starts at
    2 mean(|w|) / sqrt(Q_P), set on the first call (module docstring).

    Args:
        bits: the weight width b, 2..16.
        per_channel: one step per output channel instead of one per kernel.
        channel_axis: the kernel axis of the output channels (-1 for Conv2D and Dense).

    Raises:
        ValueError: ``bits`` outside 2..16.
    """

    def __init__(self, bits: int, per_channel: bool = False, channel_axis: int = -1):
        levels(bits, signed=True)
        self.bits = int(bits)
        self.per_channel = bool(per_channel)
        self.channel_axis = int(channel_axis)

    def build(self, tensor_shape, name, layer):
        shape = (int(tensor_shape[self.channel_axis]),) if self.per_channel else ()
        return _add_step_variables(layer, name, shape)

    def __call__(self, inputs, training, weights, **kwargs):
        del training  # the same forward pass in training and inference
        q_n, q_p = levels(self.bits, signed=True)
        rank = inputs.shape.rank
        size = inputs.shape.num_elements()
        if self.per_channel:
            axis = self.channel_axis % rank
            reduce_axes = [a for a in range(rank) if a != axis]
            step = _initialized_step(weights, lambda: initial_step(inputs, q_p, reduce_axes))
            broadcast = [1] * rank
            broadcast[axis] = -1
            step = tf.reshape(step, broadcast)
            size //= inputs.shape[axis]
        else:
            step = _initialized_step(weights, lambda: initial_step(inputs, q_p))
        return quantize(inputs, tf.cast(step, inputs.dtype), q_n, q_p, 1.0 / math.sqrt(size * q_p))

    def get_config(self):
        return {"bits": self.bits, "per_channel": self.per_channel,
                "channel_axis": self.channel_axis}

    def __eq__(self, other):
        return isinstance(other, LsqWeightQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)


@keras.utils.register_keras_serializable(package="uniq_tf_bench")
class LsqActivationQuantizer(_Quantizer):
    """LSQ on an activation tensor, one step per tensor: x_hat = round(clip(x / s, 0, 2^b - 1))
    * s after a ReLU (``signed``: the signed grid of :class:`LsqWeightQuantizer`).

    The step gradient is scaled by g = 1 / sqrt(N Q_P), N the features of one example; s starts
    at 2 mean(|x|) / sqrt(Q_P) of the first batch it sees in training (module docstring).

    Args:
        bits: the activation width b, 1..16 unsigned, 2..16 signed.
        signed: a grid symmetric about 0 instead of one from 0 up.

    Raises:
        ValueError: ``bits`` outside the range for ``signed``.
    """

    def __init__(self, bits: int, signed: bool = False):
        levels(bits, signed)
        self.bits = int(bits)
        self.signed = bool(signed)

    def build(self, tensor_shape, name, layer):
        return _add_step_variables(layer, name, ())

    def __call__(self, inputs, training, weights, **kwargs):
        q_n, q_p = levels(self.bits, self.signed)
        if training:
            step = _initialized_step(weights, lambda: initial_step(inputs, q_p))
        else:
            step = weights["step"].read_value()
        features = tf.cast(tf.reduce_prod(tf.shape(inputs)[1:]), inputs.dtype)
        grad_scale = tf.math.rsqrt(features * q_p)
        return quantize(inputs, tf.cast(step, inputs.dtype), q_n, q_p, grad_scale)

    def get_config(self):
        return {"bits": self.bits, "signed": self.signed}

    def __eq__(self, other):
        return isinstance(other, LsqActivationQuantizer) and (
            self.get_config() == other.get_config())

    def __ne__(self, other):
        return not self.__eq__(other)


@keras.utils.register_keras_serializable(package="uniq_tf_bench")
class LsqKernelConfig(peers.KernelOnlyConfig):
    """A Conv2D/Dense layer's kernel -> LsqWeightQuantizer(bits, per_channel); no output
    quantizer (the ReLU after it has its own).

    Args:
        bits: the weight width, 2..16.
        per_channel: one step per output channel instead of one per kernel.
    """

    def __init__(self, bits: int, per_channel: bool = False):
        self.bits = int(bits)
        self.per_channel = bool(per_channel)

    def kernel_quantizer(self):
        return LsqWeightQuantizer(self.bits, self.per_channel)

    def get_config(self):
        return {"bits": self.bits, "per_channel": self.per_channel}


@keras.utils.register_keras_serializable(package="uniq_tf_bench")
class LsqActivationConfig(peers.OutputOnlyConfig):
    """An activation layer's output -> LsqActivationQuantizer(bits), unsigned after a ReLU
    (signed after any activation that can go below 0).

    Args:
        bits: the activation width.
    """

    def __init__(self, bits: int):
        self.bits = int(bits)

    def get_output_quantizers(self, layer):
        signed = not registry.has_non_negative_output(layer)
        return [LsqActivationQuantizer(self.bits, signed=signed)]

    def get_config(self):
        return {"bits": self.bits}


def lsq_model(model, weight_bits: int, activation_bits: int, per_channel: bool = False):
    """A copy of the float ``model`` (weights copied, ``model`` unchanged) with LSQ on every
    Conv2D/Dense kernel and on the output of every ReLU layer, where bench/peers.py's
    ``uniform_qat`` puts its quantizers.

    Args:
        model: a float Keras functional or Sequential model.
        weight_bits: the kernels' width, 2..16.
        activation_bits: the ReLU outputs' width, 1..16.
        per_channel: one weight step per output channel instead of one per kernel.

    Returns:
        The quantized model; its steps initialize themselves (module docstring).

    Raises:
        ValueError: a width outside its range.
    """
    levels(weight_bits, signed=True)
    levels(activation_bits, signed=False)
    wrapped = peers.wrap(
        model,
        lambda layer: _QuantizeWrapper(
            layer, LsqKernelConfig(weight_bits, per_channel), name_prefix=""),
        activation_bits,
        wrap_activation=lambda layer: _QuantizeWrapper(
            layer, LsqActivationConfig(activation_bits), name_prefix=""),
    )
    return _rebuilt(wrapped)


def _rebuilt(model):
    """``model`` built again from its config, its weights assigned by name. A wrapper built
    around an already built layer lists the layer's kernel before the step; one built from its
    config (as loading a saved model builds it) the step first, and .h5 files match weights
    by position, so without this a saved LSQ model would not load."""
    with tfmot.quantization.keras.quantize_scope():
        fresh = keras.models.clone_model(model)
    values = {v.name: v for v in model.weights}
    if sorted(values) != sorted(v.name for v in fresh.weights):
        raise RuntimeError(f"rebuilding {model.name} changed its variables' names")
    for variable in fresh.weights:
        variable.assign(values[variable.name])
    return fresh
