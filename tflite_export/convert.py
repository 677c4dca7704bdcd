"""The TFLite conversion itself, in three modes, with converter errors that name the layer.

- "float": float32 weights and activations. The kernels hold the codebook values; batch
  norm folding scales each output channel, so each channel holds at most 2^b values.
- "dynamic": dynamic-range quantization: weights of large tensors (>= 1024 elements) stored
  as per-channel int8, activations float, quantized on the fly.
- "int8": full integer: int8 weights (per channel for convolutions) and int8 activations,
  builtin int8 kernels only, int8 (or float) model input and output; activation ranges come
  from the QAT model where it learned them (see :mod:`tflite_export.ranges`).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from tflite_export import ranges as range_tools
from tflite_export.errors import ConversionError
from uniq_tf._keras import tf
from uniq_tf.util.graph import layers as flatten_layers

MODES = ("float", "dynamic", "int8")
RANGE_SOURCES = ("learned", "calibrated")
_ERROR_LINES = 6


def _representative_dataset(samples: np.ndarray):
    def generate():
        for i in range(len(samples)):
            yield [samples[i : i + 1]]

    return generate


def _converter(model, mode: str, samples: np.ndarray | None, int8_io: bool):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        converter.representative_dataset = _representative_dataset(samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8 if int8_io else tf.float32
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return converter


def convert(
    model,
    mode: str,
    samples: np.ndarray | None = None,
    int8_io: bool = True,
    learned: dict[str, tuple[float, float, int]] | None = None,
) -> tuple[bytes, list[range_tools.RangeUse]]:
    """Converts a plain (stripped) tf_keras model; returns (flatbuffer, activation ranges).

    ``learned``: layer -> (min, max, bits) to write into an int8 file instead of the
    calibrated ranges; None keeps the converter's calibration.
    """
    converter = _converter(model, mode, samples, int8_io)
    try:
        with warnings.catch_warnings():
            # The int8 path warns that it has no input statistics; calibration supplies them.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            if mode == "int8" and learned:
                io_type = tf.int8 if int8_io else tf.float32
                return range_tools.quantize_with_learned_ranges(converter, learned, io_type)
            return bytes(converter.convert()), []
    except Exception as error:  # the converter raises ConverterError, ValueError, RuntimeError
        raise ConversionError(describe_converter_error(error, model, mode)) from error


def describe_converter_error(error: Exception, model, mode: str) -> str:
    """A short message naming the layers and ops the converter complained about."""
    text = str(error)
    # ConverterError.errors holds each failing op's name and location (its TF op path,
    # which holds the Keras layer name); the message itself often names neither.
    details = getattr(error, "errors", None) or []
    searched = "\n".join([text, *(str(d) for d in details)])
    layers = [
        layer.name for layer in flatten_layers(model)
        if re.search(rf"(^|[/\"']){re.escape(layer.name)}/", searched)
    ]
    ops = sorted(
        {d.operator.name.split(".", 1)[-1] for d in details if d.operator.name}
        | set(re.findall(r"'tfl?\.(\w+)' op", text))
        | set(re.findall(r"op: '?(\w+)'?", text))
    )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if "error" in line.lower()] or lines
    where = f"layer(s) {layers}" if layers else "a layer the error message does not name"
    return (
        f"The TFLite converter cannot convert model {model.name!r} in mode {mode!r}: {where} "
        f"use op(s) {ops or '(not named)'} that TFLite builtin kernels"
        f"{' (int8)' if mode == 'int8' else ''} do not support. Replace or skip those layers, "
        "or export in another mode. Converter says: " + " | ".join(lines[:_ERROR_LINES])[:1500]
    )
