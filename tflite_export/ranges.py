"""Full-integer ranges from the QAT model: the activation quantizers' learned [min, max].

The TFLite converter takes activation ranges only from calibration on a representative
dataset (or from FakeQuant ops covering every tensor, which a UNIQ model does not have). To
make the int8 file use the ranges the model was fine-tuned with, the conversion runs in two
steps, as ``TFLiteConverter`` itself does internally:

1. calibrate: the float TFLite model (batch norm folded, activations fused) records the
   min/max of every activation tensor on the representative data;
2. the min/max of each tensor that carries a learned activation quantizer is replaced by the
   learned range, then the MLIR quantizer writes the int8 model (scale = (max - min) / 255,
   zero point = -128 - min / scale, nudged so that 0 is exact, as TFMOT's FakeQuant does).

Tensors without a learned quantizer (the model input, the logits, a pre-activation sum) keep
the calibrated ranges. Steps 1-2 use TensorFlow-internal entry points
(``_experimental_calibrate_only``, ``convert.mlir_quantize``, ``flatbuffer_utils``) of the pinned
TensorFlow 2.21: ``ranges="calibrated"`` in :func:`tflite_export.export_tflite` avoids them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tflite_export import runtime
from tflite_export.errors import ConversionError
from uniq_tf import internals
from uniq_tf._keras import tf


@dataclass
class RangeUse:
    """One activation quantizer's range: learned in the Keras model, seen in calibration, and
    the one written to the int8 file (None where the tensor was not found)."""

    layer: str
    bits: int
    learned: tuple[float, float]
    calibrated: tuple[float, float] | None
    used: str  # "learned", "calibrated" or "not found"
    tensor: str | None


def names_layer(tensor_name: str, layer: str) -> bool:
    """True if a TFLite tensor name (fused ops joined by ';') comes from Keras layer ``layer``.

    Converter names look like "model/relu1/Relu;model/bn1/FusedBatchNormV3;model/conv1/Conv2D1":
    each part is a TF op path whose scope holds the layer name.
    """
    pattern = re.compile(rf"(^|/){re.escape(layer)}/")
    return any(pattern.search(part) for part in tensor_name.split(";"))


def _produced(ops) -> set[int]:
    return {int(o) for _, outputs in ops for o in outputs}


def _layer_outputs(ops, candidates: set[int]) -> set[int]:
    """The candidates from which no other candidate is computed: the layer's output tensor.

    ``ops``: (input indices, output indices) of each operator.
    """
    feeds: dict[int, set[int]] = {}
    for inputs, outputs in ops:
        for i in inputs:
            feeds.setdefault(int(i), set()).update(int(o) for o in outputs)
    return {t for t in candidates if not feeds.get(t, set()) & candidates}


_UNFUSED_ACTIVATIONS = ("LOGISTIC", "TANH", "SOFTMAX", "LOG_SOFTMAX", "ELU", "GELU", "HARD_SWISH")


def _tflite_internals():
    """TensorFlow's internal TFLite entry points, imported where they are needed so that
    ``import tflite_export`` and ``ranges="calibrated"`` never depend on them."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.python.convert import mlir_quantize
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError as error:
        raise ConversionError(
            "ranges='learned' needs TensorFlow-internal TFLite entry points (tensorflow.lite."
            f"python.convert.mlir_quantize, tensorflow.lite.tools.flatbuffer_utils) that this "
            f"TensorFlow does not have ({error}); export with ranges='calibrated' instead."
        ) from error
    return schema, mlir_quantize, flatbuffer_utils


def _pre_activations(model, candidates: set[int]) -> set[int]:
    """Candidates an unfused activation op (sigmoid, tanh, ...) turns into a tensor outside
    the candidates: the layer's pre-activation, when its activated output is the model output
    (which the converter names "StatefulPartitionedCall:0", not after the layer)."""
    schema = _tflite_internals()[0]
    unfused = {getattr(schema.BuiltinOperator, name) for name in _UNFUSED_ACTIVATIONS}
    subgraph = model.subgraphs[0]
    out = set()
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in unfused:
            continue
        if not {int(o) for o in op.outputs} & candidates:
            out.update(int(i) for i in op.inputs)
    return out & candidates


def override_ranges(calibrated: bytes, learned: dict[str, tuple[float, float, int]]):
    """Writes the learned ranges into a calibrated float model; returns (bytes, [RangeUse])."""
    flatbuffer_utils = _tflite_internals()[2]
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    subgraph = model.subgraphs[0]
    ops = [(op.inputs, op.outputs) for op in subgraph.operators]
    with_stats = {
        i: t for i, t in enumerate(subgraph.tensors)
        if t.quantization is not None and t.quantization.min is not None
    }
    names = {i: t.name.decode() for i, t in with_stats.items()}
    uses = []
    for layer, (lo, hi, bits) in learned.items():
        candidates = {i for i, n in names.items() if names_layer(n, layer)}
        found = _layer_outputs(ops, candidates) - _pre_activations(model, candidates)
        if not found:
            uses.append(RangeUse(layer, bits, (lo, hi), None, "not found", None))
            continue
        for index in sorted(found):
            quantization = with_stats[index].quantization
            seen = (float(quantization.min[0]), float(quantization.max[0]))
            quantization.min = np.array([lo], dtype=np.float32)
            quantization.max = np.array([hi], dtype=np.float32)
            uses.append(RangeUse(layer, bits, (lo, hi), seen, "learned", names[index]))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), uses


def quantize_with_learned_ranges(
    converter, learned: dict[str, tuple[float, float, int]], io_type: tf.DType
) -> tuple[bytes, list[RangeUse]]:
    """Steps 1-2 of the module docstring for a converter set up for full-integer int8."""
    mlir_quantize = _tflite_internals()[1]
    internals.set_calibrate_only(converter)
    calibrated = converter.convert()
    edited, uses = override_ranges(calibrated, learned)
    quantized = mlir_quantize(edited, input_data_type=io_type, output_data_type=io_type)
    return bytes(quantized), uses


def ranges_in_file(content: bytes, learned: dict[str, tuple[float, float, int]]) -> list[RangeUse]:
    """The ranges an int8 file uses for the learned-range layers (real values of -128..127)."""
    interpreter = runtime.load(content, inspect=True)
    ops = [(d["inputs"], d["outputs"]) for d in internals.interpreter_ops(interpreter)]
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    uses = []
    for layer, (lo, hi, bits) in learned.items():
        candidates = {i for i, d in details.items() if names_layer(d["name"], layer)}
        found = sorted(_layer_outputs(ops, candidates & _produced(ops)))
        if not found:
            uses.append(RangeUse(layer, bits, (lo, hi), None, "not found", None))
        for index in found:
            scale, zero_point = details[index]["quantization"]
            seen = (scale * (-128 - zero_point), scale * (127 - zero_point)) if scale else None
            uses.append(RangeUse(layer, bits, (lo, hi), seen, "calibrated", details[index]["name"]))
    return uses
