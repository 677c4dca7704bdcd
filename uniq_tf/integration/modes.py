"""Reading and setting the quantizers' modes and integer grids, and calibrating activation
ranges.

These are what schedule callbacks use: assigning a mode variable changes the forward pass of
an already traced train function (no retrace). Layers are named as the float model names them
(:mod:`uniq_tf.integration.names`): a split SeparableConv2D's name sets both halves.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tqdm.auto import tqdm

from uniq_tf._keras import tf
from uniq_tf.integration.inspection import (
    codebook_key,
    get_activation_ranges,
    kernel_wrappers,
    output_quantizers,
    weight_quantizers,
    wrappers,
)
from uniq_tf.integration.names import resolve
from uniq_tf.method.quantizers import ActMode, Mode, check_grid_bits
from uniq_tf.util import checks, inputs

CALIBRATION_BATCH = 32


def set_weight_mode(model, mode: Mode, layers: Iterable[str] | None = None) -> None:
    """Sets the weight quantizers of ``layers`` to FLOAT, NOISY or QUANTIZED (no retrace: modes
    are variables read in the traced step).

    Args:
        model: a quantized model (``uniq_tf.quantize_model``).
        mode: a :class:`uniq_tf.Mode` (or its integer value).
        layers: names of the layers to set (the float model's names); None sets all.

    Raises:
        ValueError: ``mode`` is not a Mode, or ``layers`` names a layer that is not quantized.
    """
    mode = Mode(mode)
    for wrapper in resolve(model, layers):
        for _, _, variables in weight_quantizers(wrapper):
            variables["mode"].assign(int(mode))


def set_activation_mode(model, mode: ActMode, layers: Iterable[str] | None = None) -> None:
    """Sets the activation (output) quantizers of ``layers`` to FLOAT, QUANTIZED or CALIBRATE.

    Args:
        model: a quantized model (``uniq_tf.quantize_model``).
        mode: a :class:`uniq_tf.ActMode` (or its integer value).
        layers: names of the layers whose output quantizers to set (the float model's
            names); None sets all.

    Raises:
        ValueError: ``mode`` is not an ActMode, or ``layers`` names a layer that is not
            quantized.
    """
    mode = ActMode(mode)
    for wrapper in resolve(model, layers):
        for _, variables in output_quantizers(wrapper):
            variables["act_mode"].assign(int(mode))


def weight_modes(model) -> dict[str, Mode]:
    """The current weight mode of every quantized kernel layer.

    Args:
        model: a quantized model.

    Returns:
        Layer name -> the :class:`uniq_tf.Mode` of its (first) weight quantizer.
    """
    return {
        w.layer.name: Mode(int(weight_quantizers(w)[0][2]["mode"].numpy()))
        for w in kernel_wrappers(model)
    }


def activation_modes(model) -> dict[str, ActMode]:
    """The current mode of every activation quantizer.

    Args:
        model: a quantized model.

    Returns:
        Layer name -> the :class:`uniq_tf.ActMode` of its output quantizer.
    """
    out = {}
    for wrapper in wrappers(model):
        for _, variables in output_quantizers(wrapper):
            out[wrapper.layer.name] = ActMode(int(variables["act_mode"].numpy()))
    return out


def calibrate_activations(model, data, steps: int | None = None, verbose: bool = True) -> dict:
    """Sets every activation quantizer's range to the min/max seen on ``data``.

    TFMOT's moving-average quantizer starts at [-6, 6] and moves with decay 0.999, too slowly
    for a short fine-tune at low bit widths; calibrating first starts it at the data's range.
    Args:
        model: a quantized model.
        data: inputs in any form of :mod:`uniq_tf.inputs` (an array is run in batches of
            ``CALIBRATION_BATCH``); labels, if given, are ignored.
        steps: batches to run (None: all of ``data``).
        verbose: show a progress bar.

    Returns:
        Layer name -> (min, max) of its activation quantizer after calibration.

    Raises:
        ValueError: ``steps`` is not a positive integer, or ``data`` gave no batch (the old
            ranges and modes are kept).
        TypeError: ``data`` is none of the accepted forms.
    """
    if steps is not None:
        steps = checks.check_positive_int(steps, "steps")
    previous = activation_modes(model)
    previous_ranges = get_activation_ranges(model)
    for wrapper in wrappers(model):
        for _, variables in output_quantizers(wrapper):
            variables["min_var"].assign(np.inf)
            variables["max_var"].assign(-np.inf)
    set_activation_mode(model, ActMode.CALIBRATE)

    @tf.function
    def run(x):
        return model(x, training=False)

    iterator = inputs.batches(data, CALIBRATION_BATCH, model=model)
    bar = tqdm(total=steps, desc="calibrating activations", disable=not verbose)
    count = 0
    for x, _ in iterator:
        run(x)
        count += 1
        bar.update(1)
        if steps is not None and count >= steps:
            break
    bar.close()
    if count == 0:
        # Without a batch the ranges would be +-inf, clamped to a meaningless [0, 1e-3]: keep
        # the old ranges and modes instead and say why.
        for wrapper in wrappers(model):
            for _, variables in output_quantizers(wrapper):
                lo, hi, _ = previous_ranges[wrapper.layer.name]
                variables["min_var"].assign(lo)
                variables["max_var"].assign(hi)
                variables["act_mode"].assign(int(previous[wrapper.layer.name]))
        raise ValueError(
            "calibrate_activations got no batch from `data` (an empty dataset or iterable); "
            "activation ranges were left as they were."
        )
    ranges = {}
    for wrapper in wrappers(model):
        for _, variables in output_quantizers(wrapper):
            lo = min(float(variables["min_var"].numpy()), 0.0)
            hi = max(float(variables["max_var"].numpy()), lo + 1e-3)
            variables["min_var"].assign(lo)
            variables["max_var"].assign(hi)
            ranges[wrapper.layer.name] = (lo, hi)
            variables["act_mode"].assign(int(previous[wrapper.layer.name]))
    return ranges


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
        layers: names of quantized layers (the float model's names: a split SeparableConv2D's
            name sets both halves), or None for all.

    Returns:
        Codebook key -> the grid width now set.

    Raises:
        ValueError: an unknown layer name, or ``bits`` narrower than a layer's codebook (the
            message names the layer and the allowed widths).
    """
    quantizers = [(codebook_key(w, attr), q) for w in resolve(model, layers, kernels_only=True)
                  for attr, q, _ in weight_quantizers(w)]
    for key, quantizer in quantizers:
        check_grid_bits(bits, quantizer.bits, f"grid bits of layer {key!r}")
    for _, quantizer in quantizers:
        quantizer.grid_bits = None if bits is None else int(bits)
    model.train_function = model.test_function = model.predict_function = None
    return {key: quantizer.grid_bits for key, quantizer in quantizers}
