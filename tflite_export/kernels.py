"""Finding each quantized kernel in a TFLite file and checking it against its codebook.

The converter writes kernels with output channels first (Conv1D/Conv2D: OHWI, Dense: (out, in),
pointwise: (out, 1, 1, in)) or last (depthwise: (1, H, W, in x multiplier)); tensor names are
the TF op paths of the fused ops, which hold the Keras layer name. Batch-norm folding turns the
stripped kernel ``w_q`` into ``s_c * w_q`` for output channel c, so what survives conversion is:

- each output channel holds at most 2^b distinct values (float, or int8 after per-channel
  quantization q = round(s_c w_q / scale_c));
- within a channel, weights with the same codebook index hold the same value ("consistent");
- float files: ``t = s_c * w_q`` up to float32 rounding, with s_c fitted by least squares,
  s_c = <t_c, w_c> / <w_c, w_c> (s_c = 1 exactly where no batch norm was folded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflite_export import runtime
from tflite_export.ranges import names_layer
from uniq_tf.method.codebook import Codebook


@dataclass
class KernelCheck:
    """One quantized kernel as found in the TFLite file."""

    key: str
    tensor: str | None
    dtype: str | None
    bits: int
    max_distinct_per_channel: int | None
    distinct_total: int | None
    consistent: bool
    max_rel_error: float | None  # float tensors only: max |t - s_c w_q| / max |s_c w_q|

    @property
    def limit(self) -> int:
        return 2**self.bits

    @property
    def ok(self) -> bool:
        return (
            self.tensor is not None
            and self.consistent
            and self.max_distinct_per_channel <= self.limit
        )


def tflite_layout(codebook: Codebook, kernel: np.ndarray) -> tuple[np.ndarray, int]:
    """``kernel`` (Keras layout) in the converter's layout, and its output-channel axis."""
    if codebook.weight == "depthwise_kernel":
        h, w, cin, mult = kernel.shape
        return kernel.reshape(1, h, w, cin * mult), 3
    if kernel.ndim == 2:
        return kernel.T, 0
    if kernel.ndim == 3:  # Conv1D runs as a Conv2D of height 1
        return kernel.transpose(2, 0, 1)[:, None], 0
    return kernel.transpose(3, 0, 1, 2), 0


def _rows(array: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)


def _distinct_per_row(rows: np.ndarray) -> np.ndarray:
    ordered = np.sort(rows, axis=1)
    return 1 + np.count_nonzero(np.diff(ordered, axis=1), axis=1)


def _consistent(values: np.ndarray, indices: np.ndarray) -> bool:
    """Per row, every index maps to one value: #distinct (index, value) = #distinct index."""
    for value_row, index_row in zip(values, indices, strict=True):
        pairs = np.unique(np.stack([index_row, value_row]).astype(np.float64), axis=1)
        if pairs.shape[1] != len(np.unique(index_row)):
            return False
    return True


def _relative_error(values: np.ndarray, reference: np.ndarray) -> float:
    t = values.astype(np.float64)
    w = reference.astype(np.float64)
    norm = np.maximum((w * w).sum(axis=1, keepdims=True), 1e-300)
    fitted = (t * w).sum(axis=1, keepdims=True) / norm * w
    return float(np.abs(t - fitted).max() / max(np.abs(fitted).max(), 1e-30))


def find_kernel(
    constants: dict[str, dict], codebook: Codebook, shape: tuple[int, ...]
) -> str | None:
    """The constant tensor holding ``codebook``'s kernel: named after its layer, right shape.

    A wrapped SeparableConv2D's two kernels share the layer name; the depthwise one is named
    ".../depthwise". (``quantize_model`` now splits SeparableConv2D into two layers; a wrapped
    one comes from a quantized model saved before, loaded from .h5.)
    """
    found = [
        name for name, d in constants.items()
        if names_layer(name, codebook.layer) and tuple(d["shape"]) == shape
    ]
    if len(found) > 1:
        depthwise = codebook.weight == "depthwise_kernel"
        found = [n for n in found if n.split(";")[-1].endswith("depthwise") == depthwise] or found
    return found[0] if found else None


def find_shared_kernel(
    constants: dict[str, dict], shape: tuple[int, ...], index_rows: np.ndarray, axis: int,
    taken: set[str],
) -> str | None:
    """The kernel of a layer called more than once, which the converter stores once under a
    name of no layer ("arith.constant"): a constant of the right shape, not found for another
    kernel, whose values map one to one to the codebook indices in every channel."""
    for name, detail in constants.items():
        if name in taken or tuple(detail["shape"]) != shape:
            continue
        if _consistent(_rows(detail["value"], axis), index_rows):
            return name
    return None


def check_kernels(
    model: runtime.ModelSource, codebooks: dict[str, Codebook]
) -> dict[str, KernelCheck]:
    """Finds each quantized kernel in a TFLite file and checks it holds its codebook values.

    Args:
        model: a .tflite path, its bytes, or a loaded interpreter.
        codebooks: ``uniq_tf.get_codebooks`` of the model the file was exported from.

    Returns:
        Codebook key -> :class:`KernelCheck` (the tensor found, distinct values per channel,
        whether they are within 2^b and match the codebook).
    """
    constants = runtime.constant_tensors(runtime.load(model, inspect=True))
    out = {}
    for key, codebook in codebooks.items():
        kernel, axis = tflite_layout(codebook, codebook.dequantize())
        indices, _ = tflite_layout(codebook, codebook.indices)
        name = find_kernel(constants, codebook, kernel.shape) or find_shared_kernel(
            constants, kernel.shape, _rows(indices, axis), axis,
            {check.tensor for check in out.values()},
        )
        if name is None:
            out[key] = KernelCheck(key, None, None, codebook.bits, None, None, False, None)
            continue
        value = constants[name]["value"]
        rows = _rows(value, axis)
        out[key] = KernelCheck(
            key=key,
            tensor=name,
            dtype=value.dtype.name,
            bits=codebook.bits,
            max_distinct_per_channel=int(_distinct_per_row(rows).max()),
            distinct_total=int(len(np.unique(value))),
            consistent=_consistent(rows, _rows(indices, axis)),
            max_rel_error=(
                _relative_error(rows, _rows(kernel, axis)) if value.dtype == np.float32 else None
            ),
        )
    return out
