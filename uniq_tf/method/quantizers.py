"""TFMOT quantizers: UNIQ's k-quantile weight quantizer and a switchable activation quantizer.

Both keep their mode in an int32 variable (created through ``layer.add_weight``, so it is
saved, restored by checkpoints and mirrored under tf.distribute). A callback assigns it
between epochs and the traced train function follows without retracing, because the
forward pass branches on the variable's value inside the graph.
"""

from __future__ import annotations

import enum

import tensorflow_model_optimization as tfmot

from uniq_tf import internals
from uniq_tf._keras import keras, tf
from uniq_tf.method import kquantile
from uniq_tf.method.settings import (
    DEFAULTS,
    check_activation_bits,
    check_distribution,
    check_noise,
    check_weight_bits,
)
from uniq_tf.util import checks

_Quantizer = tfmot.quantization.keras.quantizers.Quantizer

MODE_VARIABLE = "uniq_mode"
ACT_MODE_VARIABLE = "uniq_act_mode"


class Mode(enum.IntEnum):
    """Weight quantizer modes.

    FLOAT: the float weight. NOISY: UNIQ noise while training, the codebook at inference.
    QUANTIZED: the codebook, in training and at inference.
    """

    FLOAT = 0
    NOISY = 1
    QUANTIZED = 2


class ActMode(enum.IntEnum):
    """Activation quantizer modes. CALIBRATE records the running min/max of the input."""

    FLOAT = 0
    QUANTIZED = 1
    CALIBRATE = 2


def _with_identity_gradient(forward: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """Returns ``forward``'s value exactly, with gradient d/dw = identity (straight through)."""

    @tf.custom_gradient
    def straight_through(w_in):
        del w_in
        return tf.identity(forward), lambda dy: dy

    return straight_through(w)


def _add_mode_variable(layer, name: str, initial_mode: int) -> tf.Variable:
    """A scalar int32 mode variable of ``layer``; switching modes assigns it, so a traced
    train function picks up the new mode without retracing."""
    return layer.add_weight(
        name,
        shape=(),
        dtype=tf.int32,
        initializer=keras.initializers.Constant(initial_mode),
        trainable=False,
        # Replicas all assign the same mode: keep the first instead of combining them.
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


def check_grid_bits(grid_bits, bits: int, where: str = "grid_bits") -> int | None:
    """``grid_bits`` if it is None or an integer in max(bits, 2)..16, else a ValueError that
    names ``where`` and the allowed widths."""
    if grid_bits is None:
        return None
    low = max(int(bits), 2)
    if not checks.is_integer(grid_bits) or not low <= grid_bits <= kquantile.MAX_GRID_BITS:
        raise ValueError(
            f"{where} must be None or an integer in {low}..{kquantile.MAX_GRID_BITS} (a "
            f"{bits}-bit codebook needs a grid of at least {low} bits), got {grid_bits!r}"
        )
    return int(grid_bits)


@keras.utils.register_keras_serializable(package="uniq_tf")
class KQuantileWeightQuantizer(_Quantizer):
    """UNIQ weight quantizer (Baskin et al. 2021, sections 1-2 of docs/method.md).

    Forward, by mode:
        FLOAT:      w
        NOISY:      training: w_hat = F^-1(clip(F(w) + e)), e ~ U[-s/2k, s/2k] (the clip and
                    the noise's form depend on ``noise``); else w_q
        QUANTIZED:  w_q = F^-1((floor(F(w) k) + 1/2) / k), exactly one of k codebook values
    With ``grid_bits`` = B, the codebook of NOISY-at-inference and QUANTIZED is snapped to its
    B-bit integer grid, level_i <- s n_i (``kquantile.snap_to_grid``): the values FINN computes
    with, so a model fine-tuned this way exports to a B-bit FPGA bundle without a change.
    Backward: dL/dw = dL/d(forward) in every mode (identity); F's statistics carry no gradient.

    The defaults are :class:`uniq_tf.UniqSettings`' and every argument is checked as
    ``quantize_model`` checks it, with the same messages.

    Args:
        bits: codebook index width b (k = 2^b levels), 1..16.
        channel_axes: kernel axes that index output channels, for per-channel statistics;
            None for one set of statistics per tensor.
        distribution: "gaussian" (the paper's fit) or "empirical" (exact quantiles).
        noise_scale: 1.0 for the paper's noise of one bin's width; 2.0 for "high noise".
        initial_mode: the mode a freshly built layer starts in.
        noise: the noise model: "clipped" (default; clip to [1/(2k), 1 - 1/(2k)]), "paper"
            (the paper's clip to [1e-5, 1 - 1e-5]) or "bin_matched".
        grid_bits: None (the codebook as it is) or the integer grid width B, max(bits, 2)..16,
            the hard codebook is snapped to (``uniq_tf.set_grid_bits`` sets it on a model).

    Raises:
        ValueError: ``bits`` not an integer in 1..16, an unknown ``distribution`` or
            ``noise``, a ``noise_scale`` that is not a positive number, an unknown
            ``initial_mode``, or ``grid_bits`` outside max(bits, 2)..16.
    """

    def __init__(
        self,
        bits: int = DEFAULTS.weight_bits,
        channel_axes: tuple[int, ...] | None = None,
        distribution: str = DEFAULTS.distribution,
        noise_scale: float = DEFAULTS.noise_scale,
        initial_mode: int = Mode.NOISY,
        noise: str = DEFAULTS.noise,
        grid_bits: int | None = None,
    ):
        self.bits = check_weight_bits(bits)
        self.channel_axes = tuple(int(a) for a in channel_axes) if channel_axes else None
        self.distribution = check_distribution(distribution)
        self.noise_scale = checks.check_number(noise_scale, "noise_scale", positive=True)
        self.initial_mode = int(Mode(initial_mode))
        self.noise = check_noise(noise)
        self.grid_bits = check_grid_bits(grid_bits, self.bits)

    def build(self, tensor_shape, name, layer):
        return {"mode": _add_mode_variable(layer, f"{name}_{MODE_VARIABLE}", self.initial_mode)}

    def quantize(self, w: tf.Tensor) -> tf.Tensor:
        return kquantile.quantize(
            w, self.bits, self.channel_axes, self.distribution, self.grid_bits)

    def noisy(self, w: tf.Tensor) -> tf.Tensor:
        return kquantile.add_noise(
            w, self.bits, self.channel_axes, self.distribution, self.noise_scale, self.noise
        )

    def __call__(self, inputs, training, weights, **kwargs):
        mode = weights["mode"]
        w = inputs
        # Statistics, codebooks and noise in float32 whatever the compute dtype (a mixed
        # precision policy hands the kernel over in float16 or bfloat16); the result takes w's.
        w32 = w if w.dtype == tf.float32 else tf.cast(w, tf.float32)

        def quantized():
            return _with_identity_gradient(tf.cast(self.quantize(w32), w.dtype), w)

        if training:
            noisy_fn = lambda: _with_identity_gradient(  # noqa: E731
                tf.cast(self.noisy(w32), w.dtype), w)
        else:
            noisy_fn = quantized
        return tf.switch_case(
            tf.clip_by_value(mode, 0, 2),
            branch_fns=[lambda: tf.identity(w), noisy_fn, quantized],
        )

    def get_config(self):
        return {
            "bits": self.bits,
            "channel_axes": self.channel_axes,
            "distribution": self.distribution,
            "noise_scale": self.noise_scale,
            "initial_mode": self.initial_mode,
            "noise": self.noise,
            "grid_bits": self.grid_bits,
        }

    def __eq__(self, other):
        return isinstance(other, KQuantileWeightQuantizer) and (
            self.get_config() == other.get_config()
        )

    def __ne__(self, other):
        return not self.__eq__(other)


@keras.utils.register_keras_serializable(package="uniq_tf")
class SwitchableActivationQuantizer(_Quantizer):
    """TFMOT's MovingAverageQuantizer (uniform, asymmetric, learned EMA range, straight-through
    gradient) behind a mode switch, so the stage-wise schedule can keep later stages' activations
    in float while their ranges keep warming up, and calibration can set the ranges from data.

    ``non_negative=True`` (quantize_model sets it after ReLU and fused relu/relu6): the range
    starts at [0, 6] instead of TFMOT's [-6, 6] and its minimum stays 0, so a model fine-tuned
    without calibration still has a zero point FINN and int8 can map.

    Modes: FLOAT passes the input through (while training, the range still tracks the input);
    QUANTIZED fake-quantizes to ``bits``; CALIBRATE passes through and widens min/max to the
    running minimum and maximum of what it sees.

    The variables are built as TFMOT's MovingAverageQuantizer builds them (same names and
    initial values; float32 without autocast, for mixed precision), and the arithmetic is its
    ``MovingAvgQuantize`` (EMA of the batch range widened to include 0, decay 0.999, then
    ``tf.quantization.fake_quant_with_min_max_vars``; a test holds the two bit-identical). It is
    split so that only the range update runs outside the mode switch and the fake-quant runs
    inside the QUANTIZED branch: a switch between tensors computed outside it gives the input a
    second, all-zero gradient in the backward pass, which made every activation quantizer
    about 30% dearer.

    Args:
        bits: activation width, 2..16.
        initial_mode: the :class:`ActMode` it starts in.
        non_negative: the input is a ReLU's (range starts at [0, 6] and its minimum stays 0).
    """

    EMA_DECAY = 0.999  # TFMOT's MovingAverageQuantizer

    def __init__(
        self, bits: int = DEFAULTS.activation_bits, initial_mode: int = ActMode.QUANTIZED,
        non_negative: bool = False,
    ):
        self.bits = check_activation_bits(bits)
        self.initial_mode = int(ActMode(initial_mode))
        self.non_negative = checks.check_bool(non_negative, "non_negative")

    def build(self, tensor_shape, name, layer):
        # The range variables TFMOT's MovingAverageQuantizer builds (same names, same initial
        # [-6, 6]), made float32 without autocast: under a mixed precision policy the range and
        # the fake-quant stay float32. A ReLU's range starts at 0 (it never goes below, and a
        # minimum below 0 is a nonzero zero point that FINN cannot map).
        initial = {"min": 0.0 if self.non_negative else -6.0, "max": 6.0}
        weights = {
            f"{key}_var": layer.add_weight(
                f"{name}_{key}", shape=None, dtype=tf.float32, trainable=False,
                initializer=keras.initializers.Constant(value), autocast=False,
            )
            for key, value in initial.items()
        }
        weights["act_mode"] = _add_mode_variable(
            layer, f"{name}_{ACT_MODE_VARIABLE}", self.initial_mode
        )
        return weights

    def __call__(self, inputs, training, weights, **kwargs):
        mode = weights["act_mode"]
        min_var, max_var = weights["min_var"], weights["max_var"]
        # fake_quant takes float32 only: a half-precision activation is quantized in float32.
        out_dtype = inputs.dtype
        if out_dtype != tf.float32:
            inputs = tf.cast(inputs, tf.float32)
        if training:
            # TFMOT's MovingAvgQuantize range update (asymmetric, per tensor), in every mode;
            # after a ReLU the batch minimum is 0 and needs no reduction.
            lo = (tf.constant(0.0, inputs.dtype) if self.non_negative
                  else tf.minimum(tf.reduce_min(inputs), 0.0))
            hi = tf.maximum(tf.reduce_max(inputs), 0.0)
            range_min = internals.assign_moving_average(min_var, lo, self.EMA_DECAY)
            range_max = internals.assign_moving_average(max_var, hi, self.EMA_DECAY)
        else:
            range_min, range_max = tf.identity(min_var), tf.identity(max_var)

        def quantize():
            return tf.quantization.fake_quant_with_min_max_vars(
                inputs, range_min, range_max, num_bits=self.bits, narrow_range=False)

        def calibrate():
            lo = tf.reduce_min(inputs)
            hi = tf.reduce_max(inputs)
            with tf.control_dependencies(
                [
                    min_var.assign(tf.minimum(min_var, lo)),
                    max_var.assign(tf.maximum(max_var, hi)),
                ]
            ):
                return tf.identity(inputs)

        out = tf.switch_case(
            tf.clip_by_value(mode, 0, 2),
            branch_fns=[lambda: tf.identity(inputs), quantize, calibrate],
        )
        return out if out_dtype == tf.float32 else tf.cast(out, out_dtype)

    def get_config(self):
        return {"bits": self.bits, "initial_mode": self.initial_mode,
                "non_negative": self.non_negative}

    def __eq__(self, other):
        return isinstance(other, SwitchableActivationQuantizer) and (
            self.get_config() == other.get_config()
        )

    def __ne__(self, other):
        return not self.__eq__(other)
