"""Checking a bundle against the Keras model it came from (qonnx's executor, no FINN).

Two references:

- the quantized Keras model itself, fed the input as the bundle quantizes it: the exported
  graph differs from it by the weight grid's snapping (fpga_export.grid), so outputs agree up
  to the activation steps that snapping flips;
- :func:`grid_snapped_model`: a copy of the quantized model whose kernels hold the snapped
  values ``s * n`` (weight quantizers in FLOAT mode, activations still quantized). The exported
  graph computes the same function; outputs differ by float summation order, and by an
  activation step where that order flips a rounding.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes

import uniq_tf
from fpga_export import actquant
from fpga_export.onnx_graph import INPUT_NAME, OUTPUT_NAME
from uniq_tf._keras import keras
from uniq_tf.integration.inspection import float_kernel, kernel_wrappers


def predict(bundle_dir: str | Path, x: np.ndarray) -> np.ndarray:
    """Runs model.onnx on a batch of NHWC inputs with qonnx's execute_onnx (one call)."""
    model = ModelWrapper(str(Path(bundle_dir) / "model.onnx"))
    model = model.transform(ChangeBatchSize(len(x))).transform(InferShapes())
    feed = {INPUT_NAME: np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))}
    return execute_onnx(model, feed)[OUTPUT_NAME]


def quantize_input(bundle_dir: str | Path, x: np.ndarray) -> np.ndarray:
    """``x`` as the bundle's input Quant sees it: s * clip(round(x / s), q_min, q_max)."""
    quant = json.loads((Path(bundle_dir) / "descriptor.json").read_text())["input"]["quant"]
    params = actquant.QuantParams(quant["scale"], quant["zero_point"], quant["bits"],
                                  quant["signed"])
    return params.apply(x)


def float_weight_copy(model):
    """A copy of the quantized ``model`` (same weights) with its weight quantizers in FLOAT
    mode, so that :func:`set_kernels` decides what every kernel computes with."""
    with uniq_tf.quantize_scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    uniq_tf.set_weight_mode(copy, uniq_tf.Mode.FLOAT)
    return copy


def snapped_kernel(codebook: uniq_tf.Codebook, values: np.ndarray) -> np.ndarray:
    """The kernel whose weights hold ``values`` (the codebook's levels on the grid, s * n, of
    the shape of ``codebook.levels``) at their indices, in the Keras layout."""
    return dataclasses.replace(
        codebook, levels=np.asarray(values, np.float32).reshape(codebook.levels.shape)
    ).dequantize()


def set_kernels(copy, codebooks: dict, kernels: dict[str, np.ndarray]) -> None:
    """Assigns ``kernels`` (codebook key -> Keras-layout kernel) to the float variables of the
    layers ``codebooks`` names, in a copy from :func:`float_weight_copy`."""
    by_name = {w.layer.name: w for w in kernel_wrappers(copy)}
    for key, kernel in kernels.items():
        codebook = codebooks[key]
        float_kernel(by_name[codebook.layer], codebook.weight).assign(kernel)


def grid_snapped_model(model, bundle_dir: str | Path):
    """A copy of the quantized ``model`` with every quantized kernel replaced by its grid-snapped
    codebook values from the bundle's codebooks.npz (weight mode FLOAT)."""
    arrays = np.load(Path(bundle_dir) / "codebooks.npz")
    copy = float_weight_copy(model)
    codebooks = uniq_tf.get_codebooks(model)
    kernels = {}
    for key, codebook in codebooks.items():
        scale = arrays[f"{key}/grid_scale"]
        values = arrays[f"{key}/grid_levels"] * (scale[:, None] if scale.size > 1 else scale)
        kernels[key] = snapped_kernel(codebook, values)
    set_kernels(copy, codebooks, kernels)
    return copy


def compare(reference: np.ndarray, exported: np.ndarray) -> dict:
    """Top-1 agreement and the largest absolute output difference; ValueError if either output
    holds NaN or inf (a NaN difference would compare as agreement)."""
    for what, values in (("reference", reference), ("exported", exported)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ValueError(
                f"the {what} outputs hold {bad} non-finite values (NaN or inf); the bundle and "
                "the Keras model cannot be compared. Check the inputs and the model's weights."
            )
    diff = np.abs(np.asarray(reference) - np.asarray(exported))
    return {
        "top1_agreement": float(np.mean(reference.argmax(-1) == exported.argmax(-1))),
        "max_abs_diff": float(diff.max()),
    }
