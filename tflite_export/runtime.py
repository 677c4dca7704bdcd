"""Running and reading TFLite files with the LiteRT interpreter.

LiteRT (``ai_edge_litert``) replaces the deprecated ``tf.lite.Interpreter``; the latter is
used only where LiteRT is not installed. Inputs and outputs of full-integer models are
quantized and dequantized here with the file's own scale and zero point:
``q = clip(round(x / scale) + zero_point, -128, 127)``, ``x = (q - zero_point) * scale``.
"""

from __future__ import annotations

import os

import numpy as np

from uniq_tf import internals
from uniq_tf._keras import tf

try:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    RUNTIME = "ai_edge_litert (LiteRT)"
except ImportError:  # LiteRT missing: TensorFlow's own (deprecated) interpreter
    Interpreter = tf.lite.Interpreter
    OpResolverType = tf.lite.experimental.OpResolverType
    RUNTIME = "tf.lite (LiteRT not installed)"

ModelSource = bytes | str | os.PathLike


def load(model: ModelSource, inspect: bool = False) -> Interpreter:
    """An interpreter for a TFLite file (path) or flatbuffer (bytes), tensors allocated.

    ``inspect=True`` runs without the default XNNPACK delegate, which repacks constant
    tensors; the plain builtin kernels leave every constant readable with ``get_tensor``.
    """
    kwargs = {}
    if inspect:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model, bytes):
        interpreter = Interpreter(model_content=model, **kwargs)
    else:
        interpreter = Interpreter(model_path=os.fspath(model), **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def io_types(model: ModelSource) -> tuple[str, str]:
    """(input dtype, output dtype) names of a single-input, single-output file."""
    interpreter = load(model)
    return (
        interpreter.get_input_details()[0]["dtype"].__name__,
        interpreter.get_output_details()[0]["dtype"].__name__,
    )


def constant_tensors(interpreter: Interpreter) -> dict[str, dict]:
    """Name -> tensor details (plus "value") of every constant tensor (weights, biases).

    Constants are the tensors no operator produces and that are not model inputs.
    """
    produced = {i for op in internals.interpreter_ops(interpreter) for i in op["outputs"]}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    out = {}
    for detail in interpreter.get_tensor_details():
        index = detail["index"]
        if index in produced or index in inputs:
            continue
        out[detail["name"]] = {**detail, "value": interpreter.get_tensor(index)}
    return out


# |d output / d input| at most, for the activations whose int8 output has a fixed scale
_FIXED_SCALE_SLOPES = {"LOGISTIC": 0.25, "TANH": 1.0, "SOFTMAX": 0.5}


def io_quantization(model: ModelSource) -> tuple[tuple[float, int] | None, float | None]:
    """((scale, zero point) of the file's quantized input, step of its quantized output).

    With int8 I/O these are the I/O tensors' own; with float I/O, those of the QUANTIZE op's
    output after the input and of the DEQUANTIZE op's input before the output. The output
    step is the output's scale, or, after a sigmoid, tanh or softmax (whose int8 output has a
    fixed scale), the larger of it and what one step of their input changes (slope x scale).
    None where that side is not quantized (float and dynamic files, integer inputs).
    """
    interpreter = load(model)
    params = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details()}
    ops = internals.interpreter_ops(interpreter)
    entry = interpreter.get_input_details()[0]["index"]
    exit_ = interpreter.get_output_details()[0]["index"]
    if not params[entry][0]:
        entry = next((op["outputs"][0] for op in ops
                      if op["op_name"] == "QUANTIZE" and entry in op["inputs"]), entry)
    if not params[exit_][0]:
        exit_ = next((op["inputs"][0] for op in ops
                      if op["op_name"] == "DEQUANTIZE" and exit_ in op["outputs"]), exit_)
    scale, zero_point = params[entry]
    output_step = float(params[exit_][0])
    producer = next((op for op in ops if exit_ in op["outputs"]), None)
    if output_step and producer is not None and producer["op_name"] in _FIXED_SCALE_SLOPES:
        before = float(params[producer["inputs"][0]][0])
        output_step = max(output_step, _FIXED_SCALE_SLOPES[producer["op_name"]] * before)
    return ((float(scale), int(zero_point)) if scale else None), (output_step or None)


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """``x`` as a TFLite input tensor takes it: cast to its dtype, and for an int8 input
    quantized with the tensor's scale and zero point.

    Args:
        x: float inputs.
        detail: the input's details from the interpreter (``get_input_details()[0]``).

    Returns:
        The array to ``set_tensor``.
    """
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32 or scale == 0:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def _dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if y.dtype == np.float32 or scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def predict(model: ModelSource | Interpreter, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Runs a single-input, single-output TFLite model in LiteRT.

    Args:
        model: a .tflite path, its bytes, or a loaded interpreter.
        x: inputs (N, *input_shape): float (quantized here for an int8 input), or integer for
            integer inputs such as token ids.
        batch_size: rows per interpreter call.

    Returns:
        The float outputs (N, *output_shape) (dequantized for an int8 output).
    """
    interpreter = model if isinstance(model, Interpreter) else load(model)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32)
    outputs = []
    current = None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        input_detail = interpreter.get_input_details()[0]
        if current != len(batch):
            interpreter.resize_tensor_input(input_detail["index"], [len(batch), *batch.shape[1:]])
            interpreter.allocate_tensors()
            current = len(batch)
            input_detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(input_detail["index"], quantize_input(batch, input_detail))
        interpreter.invoke()
        output = interpreter.get_output_details()[0]
        outputs.append(_dequantize_output(interpreter.get_tensor(output["index"]), output))
    return np.concatenate(outputs, axis=0)
