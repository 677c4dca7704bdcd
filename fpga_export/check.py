"""Checking a bundle against the Keras model it came from (qonnx's executor, no FINN).

Every export is checked (:func:`verify`) before the bundle is placed: model.onnx is run on the
user's data (or on inputs drawn inside the input quantizer's range) and compared with the
quantized Keras model on the same raw inputs. It passes when the largest output difference is
within ``rtol`` of the Keras outputs' range on all but :data:`MAX_OUTLIERS` of the samples, and
classifiers agree on the top-1 class on at least ``min_agreement`` of the rows whose top-2 gap
exceeds that tolerance (a near tie may flip). The record says both figures and the tolerances.

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


def grid_snapped_model(model, bundle_dir: str | Path, codebooks: dict | None = None):
    """A copy of the quantized ``model`` with every quantized kernel replaced by its grid-snapped
    codebook values from the bundle's codebooks.npz (weight mode FLOAT)."""
    arrays = np.load(Path(bundle_dir) / "codebooks.npz")
    copy = float_weight_copy(model)
    codebooks = uniq_tf.get_codebooks(model) if codebooks is None else codebooks
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


CHECK_SAMPLES = 256
GRAPH_RTOL = 0.02  # of the reference outputs' range: rounding flips of activation steps only
RTOL = 0.05  # the parity with the Keras model reported beside it
MAX_OUTLIERS = 0.01  # fraction of samples allowed beyond the tolerance
MIN_AGREEMENT = 0.99
MAX_INPUT_CLIPPED = 0.01  # fraction of input values allowed outside the input quantizer


class CheckError(ValueError):
    """The exported bundle does not compute what it should; no bundle was placed."""


def parity(reference: np.ndarray, exported: np.ndarray, rtol: float) -> dict:
    """``exported`` against ``reference`` (one row per sample): the tolerance (``rtol`` of the
    reference outputs' range), max |diff|, the fraction of samples beyond the tolerance, and
    for classifiers the top-1 agreement on all rows and on the rows whose reference top-2 gap
    exceeds the tolerance (a near tie may flip)."""
    compare(reference, exported)  # NaN and inf are errors
    reference = np.asarray(reference).reshape(len(reference), -1)
    exported = np.asarray(exported).reshape(len(exported), -1)
    output_range = float(np.ptp(reference))
    tolerance = rtol * max(output_range, 1e-12)
    diff = np.abs(reference - exported).max(axis=1)
    out = {"rtol": rtol, "output_range": output_range, "tolerance": tolerance,
           "max_abs_diff": float(diff.max()), "outliers": float(np.mean(diff > tolerance)),
           "top1_agreement": None, "clear_rows": None, "clear_agreement": None}
    if reference.shape[1] > 1:
        same = reference.argmax(-1) == exported.argmax(-1)
        top2 = np.sort(reference, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > tolerance
        out.update(top1_agreement=float(same.mean()), clear_rows=int(clear.sum()),
                   clear_agreement=float(same[clear].mean()) if clear.any() else None)
    return out


def _problems(record: dict, min_agreement: float) -> list[str]:
    graph, problems = record["graph"], []
    if record["input_clipped"] > MAX_INPUT_CLIPPED:
        problems.append(
            f"{100 * record['input_clipped']:.1f}% of the input values lie outside the input "
            f"quantizer's range [{record['input_range'][0]:.4g}, {record['input_range'][1]:.4g}]"
            f" (at most {100 * MAX_INPUT_CLIPPED:g}%): state a range that holds the data, or "
            "derive it from them (data=...)")
    if graph["outliers"] > MAX_OUTLIERS:
        problems.append(
            f"model.onnx differs from the Keras model with the bundle's weights by up to "
            f"{graph['max_abs_diff']:.4g}, beyond the tolerance {graph['tolerance']:.4g} "
            f"({graph['rtol']:g} of the outputs' range) on {100 * graph['outliers']:.1f}% of "
            f"the samples (at most {100 * MAX_OUTLIERS:g}%)")
    if graph["clear_agreement"] is not None and graph["clear_agreement"] < min_agreement:
        problems.append(
            f"model.onnx agrees with the Keras model with the bundle's weights on the top-1 "
            f"class of {100 * graph['clear_agreement']:.2f}% of the {graph['clear_rows']} rows "
            f"without a near tie (at least {100 * min_agreement:g}%)")
    return problems


def verify(bundle_dir: str | Path, quantized, x: np.ndarray, source: str,
           input_quant: actquant.QuantParams, codebooks: dict, rtol: float = RTOL,
           min_agreement: float = MIN_AGREEMENT) -> dict:
    """Checks the bundle in ``bundle_dir`` (model.onnx and codebooks.npz written) on the inputs
    ``x``, the bundle's input quantizer being ``input_quant`` and its codebooks ``codebooks``;
    returns the record that descriptor.json and README.md carry.

    What must hold (else :class:`CheckError`):

    - at most :data:`MAX_INPUT_CLIPPED` of the input values lie outside the input quantizer's
      range;
    - model.onnx computes what the Keras model computes with the bundle's weights (its
      codebooks on their integer grids) fed the bundle's quantized inputs: within
      :data:`GRAPH_RTOL` of the outputs' range on all but :data:`MAX_OUTLIERS` of the samples,
      and the same top-1 class on at least ``min_agreement`` of the rows without a near tie.

    What is reported beside it: the parity with the quantized Keras model (``quantized``) on the
    raw inputs, at tolerance ``rtol``: what the grid's snapping and the input quantizer change.

    Raises:
        CheckError: the bundle fails (the message gives the figures and what to do); NaN or
            inf outputs are a ValueError.
    """
    exported = predict(bundle_dir, x)
    if exported.ndim == 4:  # a feature map leaves the graph in ONNX's NCHW layout
        exported = exported.transpose(0, 2, 3, 1)
    snapped = grid_snapped_model(quantized.model, bundle_dir, codebooks)
    graph = snapped.predict(input_quant.apply(x), verbose=0, batch_size=CHECK_SAMPLES)
    keras_out = quantized.model.predict(x, verbose=0, batch_size=CHECK_SAMPLES)
    lo, hi = input_quant.min_value, input_quant.max_value
    slack = input_quant.scale / 2
    record = {
        "status": "passed", "samples": int(len(x)), "inputs": source,
        "input_range": [lo, hi],
        "input_clipped": float(np.mean((x < lo - slack) | (x > hi + slack))),
        "max_input_clipped": MAX_INPUT_CLIPPED, "max_outliers": MAX_OUTLIERS,
        "min_agreement": min_agreement,
        "graph": {"reference": "the Keras model with the bundle's grid weights, fed the "
                               "bundle's quantized inputs",
                  **parity(graph, exported, GRAPH_RTOL)},
        "keras": {"reference": "the quantized Keras model on the raw inputs",
                  **parity(keras_out, exported, rtol)},
    }
    problems = _problems(record, min_agreement)
    if problems:
        record["status"] = "failed"
        raise CheckError(
            f"The FINN bundle fails its check on {len(x)} samples ({source}): "
            + "; ".join(problems) + ". No bundle was written (check=False writes it "
            "unchecked).")
    return record
