"""``export_finn``: a UNIQ-quantized tf_keras model as a FINN-ready QONNX bundle.

The bundle (a directory, written atomically):

- ``model.onnx``: the QONNX graph (:mod:`fpga_export.onnx_graph`), NCHW input named "input",
  shapes and FINN datatypes annotated, codebooks in the metadata props;
- ``codebooks.npz``: per quantized layer the codebook levels and the b-bit indices (Keras
  kernel layout, ``levels[indices]`` is the stripped kernel), the grid integers and scale;
- ``descriptor.json``: per layer op, shapes, bit widths, codebooks (float and on the grid), the
  grid scale, MACs, BOPs (:mod:`fpga_export.costs`), weight memory, and model totals including
  ``qonnx.util.inference_cost``'s count of the exported graph;
- ``dataflow_build_config.json``, ``folding_config.json``, ``specialize_layers_config.json``:
  FINN's DataflowBuildConfig and the per-layer PE/SIMD (:mod:`fpga_export.folding`);
- ``README.md``: how to run FINN on it, and the check's figures (:mod:`fpga_export.bundle`).

The input quantizer comes from the user's data or is stated (:func:`fpga_export.actquant
.input_quantizer`), and every bundle is checked against the Keras model before it is placed
(:func:`fpga_export.check.verify`): a failed check leaves no bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.inference_cost import inference_cost

import uniq_tf
from fpga_export import actquant, autogrid, bundle, costs, folding, grid, onnx_graph
from fpga_export.check import CHECK_SAMPLES, MAX_OUTLIERS, MIN_AGREEMENT, RTOL, verify
from uniq_tf import ActMode
from uniq_tf.util import atomic, checks, inputs
from uniq_tf.util.graph import layers as flatten_layers

FINN_MAX_ACTIVATION_BITS = 8  # DataflowBuildConfig.max_multithreshold_bit_width's default
DEFAULT_BOARD = "Pynq-Z1"
DEFAULT_CLOCK_NS = 10.0


@dataclass
class FinnExport:
    """Where the bundle went and its descriptor (the content of descriptor.json)."""

    out_dir: Path
    descriptor: dict


def _check_int(value, low: int, high: int, what: str) -> int:
    return checks.check_int(value, what, low, high)


def _check_positive(value, what: str) -> float:
    return checks.check_number(value, what, positive=True)


def _input_shape(model, input_shape) -> tuple[int, int, int]:
    shapes = model.input_shape
    if isinstance(shapes, list):
        raise ValueError(f"model {model.name!r} has {len(shapes)} inputs; FINN export needs one")
    known = tuple(shapes[1:])
    if len(known) != 3:
        raise ValueError(
            f"model {model.name!r} takes rank-{len(known) + 1} inputs {shapes}; FINN export "
            "needs images (batch, height, width, channels)"
        )
    if input_shape is None:
        if None in known:
            raise ValueError(
                f"model {model.name!r} has a dynamic input shape {shapes}; pass "
                "input_shape=(height, width, channels) to fix it for FINN"
            )
        return known
    shape = tuple(input_shape)
    if len(shape) != 3 or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape
    ):
        raise ValueError(f"input_shape must be (height, width, channels) integers, got {shape}")
    if any(k is not None and k != d for k, d in zip(known, shape, strict=True)):
        raise ValueError(f"input_shape {shape} contradicts the model's input shape {shapes}")
    return tuple(int(d) for d in shape)


def _check_out_dir(out_dir: Path, overwrite: bool) -> Path:
    """``out_dir`` if the bundle may be written there, else FileExistsError or PermissionError
    (before any work is done)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(
            f"{out_dir} is a file, not a bundle directory; overwrite=True replaces bundle "
            "directories only. Remove the file or choose another out_dir."
        )
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not an empty directory; pass overwrite=True to replace it"
        )
    atomic.check_directory(out_dir.parent, "the bundle's directory")
    existing = next(p for p in (out_dir.parent, *out_dir.parent.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write the bundle {out_dir}: directory {existing} is not writable. Choose "
            "an out_dir in a writable directory."
        )
    return out_dir


def _check_supported(stripped) -> None:
    problems = []
    for layer in flatten_layers(stripped):
        reason = onnx_graph.unsupported_reason(layer)
        if reason is not None:
            problems.append(f"{layer.name} ({reason})")
    if problems:
        raise ValueError(
            "FINN export supports Conv2D, DepthwiseConv2D, Dense, BatchNormalization, "
            "ReLU/ReLU6, Add, MaxPool/AveragePool/GlobalAveragePool, Flatten, Reshape (and "
            "ZeroPadding2D, Concatenate, Rescaling, Dropout, a softmax activation); these "
            f"{len(problems)} layers are not: " + "; ".join(problems)
        )


AUTO = "auto"
RULES = {
    "level_error": "smallest B >= max(b, 2) within grid_tolerance of the smallest level gap",
    "trained": "the grid the layer was fine-tuned on (uniq_tf.set_grid_bits)",
    "fixed": "weight_grid_bits",
    "validation": "smallest B within the validation tolerance (fpga_export.autogrid)",
}


def _fallback_grids(codebooks, tolerance) -> tuple[dict[str, grid.IntegerGrid], dict[str, str]]:
    """Data-free widths: the fine-tuned grid where there is one, else the level-error rule."""
    grids, rules = {}, {}
    for key, codebook in codebooks.items():
        try:
            grids[key] = grid.snap_codebook(codebook.levels, codebook.bits, tolerance,
                                            codebook.grid_bits)
        except ValueError as err:
            raise ValueError(f"layer {key!r}: {err}") from None
        rules[key] = "level_error" if codebook.grid_bits is None else "trained"
    return grids, rules


def _fixed_grids(codebooks, grid_bits, tolerance) -> dict[str, grid.IntegerGrid]:
    out = {}
    for key, codebook in codebooks.items():
        if grid_bits < max(codebook.bits, 2):
            raise ValueError(
                f"weight_grid_bits={grid_bits} is narrower than layer {key!r}'s codebook: "
                f"{codebook.size} levels need at least {max(codebook.bits, 2)} bits"
            )
        if codebook.grid_bits not in (None, grid_bits):
            warnings.warn(
                f"layer {key!r} was fine-tuned on a {codebook.grid_bits}-bit grid; "
                f"weight_grid_bits={grid_bits} snaps its levels again, so the bundle no longer "
                "computes exactly what the Keras model computes",
                stacklevel=3,
            )
        out[key] = grid.snap_codebook(codebook.levels, codebook.bits, tolerance, grid_bits)
        worst = float(out[key].relative_error.max())
        if worst > tolerance:
            warnings.warn(
                f"layer {key!r}: a {grid_bits}-bit grid represents its codebook within "
                f"{worst:.2%} of the smallest level gap, above grid_tolerance={tolerance:.2%}",
                stacklevel=3,
            )
    return out


def _codebooks(quantized, given) -> dict:
    """The model's codebooks, or ``given`` after checking it matches them."""
    own = quantized.codebooks
    if given is None:
        return own
    if set(given) != set(own):
        raise ValueError(f"codebooks must have the model's keys {sorted(own)}, got "
                         f"{sorted(given)}")
    for key, codebook in given.items():
        if np.shape(codebook.indices) != np.shape(own[key].indices):
            raise ValueError(f"codebooks[{key!r}] indexes a kernel of shape "
                             f"{np.shape(codebook.indices)}, the model's is "
                             f"{np.shape(own[key].indices)}")
    return dict(given)


def _activations(quantized) -> dict[str, actquant.QuantParams]:
    ranges = quantized.activation_ranges
    too_wide = {name: bits for name, (_, _, bits) in ranges.items()
                if bits > FINN_MAX_ACTIVATION_BITS}
    if too_wide:
        warnings.warn(
            f"activation quantizers wider than {FINN_MAX_ACTIVATION_BITS} bits: {too_wide}. "
            "FINN converts activation Quant nodes to thresholds only up to "
            f"max_multithreshold_bit_width ({FINN_MAX_ACTIVATION_BITS} by default); the build "
            f"config raises it to {max(too_wide.values())}, at 2^bits - 1 thresholds per "
            "channel.",
            stacklevel=3,
        )
    not_quantized = sorted(n for n, m in quantized.activation_modes().items()
                           if m != ActMode.QUANTIZED)
    if not_quantized:
        warnings.warn(
            f"activation quantizers of {not_quantized} are not in QUANTIZED mode; the export "
            "quantizes them anyway with their current ranges",
            stacklevel=3,
        )
    return {name: actquant.from_fake_quant(lo, hi, bits) for name, (lo, hi, bits) in
            ranges.items()}


MAX_NAMES_PER_NOTE = 5


def summarize_notes(notes: list[str]) -> list[str]:
    """One line per cause: notes that differ only in the quoted layer name are merged, naming
    the first ``MAX_NAMES_PER_NOTE`` layers and counting the rest."""
    by_cause: dict[str, list[str]] = {}
    for note in notes:
        names = re.findall(r"'[^']*'", note)
        cause = re.sub(r"'[^']*'", "{}", note, count=1) if names else note
        by_cause.setdefault(cause, []).extend(names[:1])
    lines = []
    for cause, names in by_cause.items():
        shown = ", ".join(names[:MAX_NAMES_PER_NOTE])
        more = len(names) - MAX_NAMES_PER_NOTE
        named = shown + (f" and {more} more" if more > 0 else "")
        lines.append("- " + (cause.replace("{}", named, 1) if names else cause))
    return lines


def _annotate(graph: onnx_graph.GraphResult, metadata: dict) -> ModelWrapper:
    wrapper = ModelWrapper(graph.model)
    wrapper = wrapper.transform(InferShapes()).transform(InferDataTypes())
    for layer in graph.layers:
        if layer.grid is not None:
            name = wrapper.find_producer(
                next(n for n in wrapper.graph.node if n.name == layer.onnx_node).input[1]
            ).input[0]
            wrapper.set_tensor_datatype(name, DataType[f"INT{layer.grid.bits}"])
    # ModelProto.metadata_props (qonnx's set_metadata_prop writes the graph's instead)
    onnx.helper.set_model_props(wrapper.model, metadata)
    return wrapper


def _qonnx_bops(wrapper: ModelWrapper) -> dict:
    cost = inference_cost(ModelWrapper(wrapper.model.SerializeToString()),
                          discount_sparsity=False)["total_cost"]
    return {"total_bops": cost["total_bops"], "total_macs": cost["total_macs"],
            "total_mem_w_bits": cost["total_mem_w_bits"], "unsupported_ops": cost["unsupported"]}


def _write_npz(path: Path, graph: onnx_graph.GraphResult) -> None:
    arrays = {}
    for layer in graph.layers:
        if layer.codebook is None:
            continue
        arrays[f"{layer.name}/levels"] = layer.codebook.levels
        arrays[f"{layer.name}/indices"] = layer.codebook.indices
        arrays[f"{layer.name}/grid_levels"] = layer.grid.levels.reshape(
            layer.codebook.levels.shape)
        arrays[f"{layer.name}/grid_scale"] = layer.grid.scale
        arrays[f"{layer.name}/channel_axes"] = np.array(layer.codebook.channel_axes or (), int)
    np.savez(path, **arrays)


def _place(tmp: Path, out_dir: Path) -> None:
    """Moves the finished bundle ``tmp`` to ``out_dir``, replacing an old one only at the end."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
    os.replace(out_dir, old / "bundle")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old / "bundle", out_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def export_finn(
    model,
    out_dir: str | os.PathLike,
    input_shape: tuple[int, int, int] | None = None,
    weight_grid_bits: int | str | None = None,
    target_fps: float | None = None,
    board: str | None = None,
    *,
    data=None,
    input_range: tuple[float, float] | None = None,
    input_bits: int | None = None,
    input_scale: float | None = None,
    input_signed: bool | None = None,
    check: bool = True,
    check_data=None,
    check_rtol: float = RTOL,
    overwrite: bool = False,
    grid_tolerance: float = grid.GRID_TOLERANCE,
    synth_clk_period_ns: float = DEFAULT_CLOCK_NS,
    cost_check: bool = True,
    validation_data=None,
    validation_tolerance: float = autogrid.DEFAULT_TOLERANCE,
    validation_metric: str = "agreement",
    codebooks: dict | None = None,
) -> FinnExport:
    """Writes the FINN bundle of a UNIQ-quantized model to ``out_dir`` (module docstring).

    Args:
        model: a model made by ``uniq_tf.quantize_model`` (trained, or loaded inside
            ``uniq_tf.quantize_scope()``), or its ``uniq_tf.QuantizedModel``: its codebooks,
            activation ranges and stripped graph are read once from it.
        out_dir: the bundle directory; it must not exist or be empty unless ``overwrite``.
        input_shape: (height, width, channels), needed when the model's is dynamic.
        weight_grid_bits: the integer grid width B of every quantized layer (an int); "auto"
            for per layer the smallest B >= its index width whose exported model stays within
            ``validation_tolerance`` of the Keras model on ``validation_data``, found by the
            greedy search of fpga_export.autogrid starting from the data-free widths; None
            (default) for "auto" when ``validation_data`` is given, else the data-free rule:
            per layer the grid it was fine-tuned on (``uniq_tf.set_grid_bits``), else the
            smallest B >= its index width that represents its codebook within
            ``grid_tolerance`` of the smallest level gap (fpga_export.grid; B = 10 for the
            4-bit demo model, where a fine-tune on the 4- or 5-bit grid keeps its accuracy
            at that B and "auto" picks 4-6 per layer, docs/benchmarks.md section 6).
        target_fps: frames per second the folding config aims at; None for PE = SIMD = 1.
        board: a FINN board name (fpga_export.bundle.BOARDS), default "Pynq-Z1".
        data: representative inputs in any form of ``uniq_tf.util.inputs`` (labels are
            ignored), as the model sees them: the input quantizer's range is taken from
            them unless stated, and the check runs on them. (``validation_data`` serves when
            this is None.)
        input_range: (lo, hi) of the model input: the input quantizer (zero point 0, signed
            when lo < 0, ``input_bits`` bits) holds it. Data must lie inside it.
        input_bits, input_scale, input_signed: the input quantizer stated directly (zero point
            0; default 8 bits, unsigned): digits (k/16) are exact with input_bits=5,
            input_scale=1/16. Without data, input_range or input_scale the export refuses:
            uniq_tf does not guess an input range.
        check: run the bundle (qonnx) against the Keras model before placing it; a failed
            check leaves no bundle (fpga_export.check). False writes it with the check
            recorded as "unchecked".
        check_data: inputs to check on (default: ``data``; without data, inputs drawn
            uniformly inside the input quantizer's range).
        check_rtol: the check's tolerance, a fraction of the Keras outputs' range.
        overwrite: replace a non-empty ``out_dir``.
        synth_clk_period_ns: the FINN clock period the folding is computed for.
        cost_check: cross-check the MACs and BOPs with ``qonnx.util.inference_cost``
            (descriptor totals "qonnx_inference_cost"); it takes minutes on large graphs
            (about 20 for DenseNet121 at 64x64): False skips it and writes null.
        validation_data: inputs x (Keras layout), or (x, y) with integer labels, held out
            from training (a validation split): the data "auto" scores the widths on. Giving
            it with weight_grid_bits=None selects "auto".
        validation_tolerance: for "auto": how far the exported model's score may be from
            the Keras model's (fpga_export.autogrid: 1 - agreement, accuracy points as a
            fraction, or relative loss), default 0.005.
        validation_metric: for "auto": "agreement" (top-1 with the Keras model, needs x
            only), "accuracy" or "loss" (need labels; "loss" the model's compiled loss).
        codebooks: codebook key -> ``uniq_tf.Codebook`` to export instead of the model's own
            (``uniq_tf.get_codebooks(model)``), same keys and kernel shapes: for a model whose
            weights another quantizer put on a grid, e.g. a uniform b-bit model moved into a
            UNIQ-quantized model of the same architecture (the baseline of bench/fpga).

    Returns:
        FinnExport: the bundle directory and its descriptor. The descriptor says per layer
        which rule chose B (``codebook.grid_rule``), for "auto" the search's scores
        (``weight_grid.selection``), how the input quantizer was found (``input.how``) and
        the check's figures (``check``).

    Raises:
        ValueError: a float model, an unsupported layer (all are named), an argument out of
            range, no data and no stated input range, data outside a stated range, data that
            do not fit the model's input, a grid narrower than a layer's codebook, "auto"
            without validation_data or validation_data with an integer width, labels
            missing for the metric, ``codebooks`` whose keys or shapes differ from the
            model's.
        fpga_export.check.CheckError: the bundle fails its check (a ValueError; no bundle).
        FileExistsError, PermissionError: ``out_dir`` cannot take the bundle.
    """
    quantized = uniq_tf.inspect_quantized(model)
    model = quantized.model
    if weight_grid_bits is None and validation_data is not None:
        weight_grid_bits = AUTO
    if weight_grid_bits == AUTO:
        if validation_data is None:
            raise ValueError('weight_grid_bits="auto" measures accuracy: pass validation_data '
                             "(inputs x, or (x, y))")
        validation_tolerance = _check_positive(validation_tolerance, "validation_tolerance")
        if validation_metric not in autogrid.METRICS:
            raise ValueError(f"validation_metric must be one of {autogrid.METRICS}, got "
                             f"{validation_metric!r}")
    elif validation_data is not None:
        raise ValueError('validation_data is used only with weight_grid_bits="auto" (or None, '
                         'which then means "auto"), got '
                         f"weight_grid_bits={weight_grid_bits!r}")
    elif weight_grid_bits is not None:
        weight_grid_bits = _check_int(weight_grid_bits, 2, grid.MAX_GRID_BITS,
                                      'weight_grid_bits (or "auto")')
    if target_fps is not None:
        target_fps = _check_positive(target_fps, "target_fps")
    board = DEFAULT_BOARD if board is None else board
    if board not in bundle.BOARDS:
        raise ValueError(f"board must be one of {sorted(bundle.BOARDS)}, got {board!r}")
    if input_bits is not None:
        input_bits = _check_int(input_bits, 2, 16, "input_bits")
    if input_scale is not None:
        input_scale = _check_positive(input_scale, "input_scale")
    if input_range is not None:
        input_range = tuple(_check_number(v, "input_range") for v in input_range)
    grid_tolerance = _check_positive(grid_tolerance, "grid_tolerance")
    synth_clk_period_ns = _check_positive(synth_clk_period_ns, "synth_clk_period_ns")
    check_rtol = _check_positive(check_rtol, "check_rtol")
    out_dir = _check_out_dir(Path(out_dir), overwrite)
    shape = _input_shape(model, input_shape)
    representative = data if data is not None else validation_data
    x_data = None if representative is None else inputs.samples(
        representative, model, MAX_RANGE_SAMPLES, "data")
    input_quant, input_how = actquant.input_quantizer(
        None if x_data is None else (float(x_data.min()), float(x_data.max())), input_range,
        input_bits, input_scale, input_signed)
    x_check, check_source = _check_inputs(model, shape, check_data, x_data,
                                          input_range or (input_quant.min_value,
                                                          input_quant.max_value))

    stripped = quantized.stripped
    _check_supported(stripped)
    codebooks = _codebooks(quantized, codebooks)
    selection = None
    if weight_grid_bits is None or weight_grid_bits == AUTO:
        grids, rules = _fallback_grids(codebooks, grid_tolerance)
    else:
        grids = _fixed_grids(codebooks, weight_grid_bits, grid_tolerance)
        rules = dict.fromkeys(codebooks, "fixed")
    if weight_grid_bits == AUTO:
        grids, selection = autogrid.choose_grid_bits(
            model, codebooks, grids, input_quant, validation_data, validation_tolerance,
            validation_metric)
        rules = dict.fromkeys(codebooks, "validation")
    activations = _activations(quantized)
    graph = onnx_graph.build_graph(stripped, shape, input_quant, codebooks, grids, activations)
    notes = bundle.finn_notes(graph)
    if notes:
        warnings.warn(
            "model.onnx runs in qonnx, but FINN will not map all of it (descriptor.json "
            "'finn_notes' names every layer):\n" + "\n".join(summarize_notes(notes)),
            stacklevel=2,
        )

    rows = [costs.layer_costs(layer) for layer in graph.layers]
    foldings = folding.fold(graph.layers, target_fps, synth_clk_period_ns)
    metadata = bundle.metadata_props(graph)
    wrapper = _annotate(graph, metadata)
    descriptor = bundle.descriptor(
        model.name, shape, input_quant, graph, rows, activations, foldings,
        qonnx_cost=_qonnx_bops(wrapper) if cost_check else None, grid_tolerance=grid_tolerance,
        grid_rules={key: (rule, RULES[rule]) for key, rule in rules.items()},
        grid_selection=selection,
    )
    descriptor["input"]["how"] = input_how
    act_bits = max([p.bits for p in activations.values()], default=0)
    build_config = bundle.build_config(
        board, synth_clk_period_ns, target_fps,
        act_bits if act_bits > FINN_MAX_ACTIVATION_BITS else None,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the bundle is an ordinary directory
        _write_model(tmp, wrapper, graph)
        descriptor["check"] = (
            verify(tmp, quantized, x_check, check_source, input_quant, codebooks, check_rtol)
            if check
            else {"status": "unchecked"})
        _warn_on_parity(descriptor["check"])
        files = {
            "descriptor.json": descriptor,
            "dataflow_build_config.json": build_config,
            "folding_config.json": folding.folding_config(foldings),
            "specialize_layers_config.json": bundle.specialize_config(),
        }
        for name, content in files.items():
            text = json.dumps(content, indent=2, default=atomic.json_default)
            (tmp / name).write_text(text + "\n")
        (tmp / "README.md").write_text(bundle.readme(descriptor, build_config))
        shutil.copyfile(Path(__file__).with_name("finn_steps.py"),
                        tmp / f"{bundle.STEPS_MODULE}.py")
        _place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FinnExport(out_dir, descriptor)


MAX_RANGE_SAMPLES = 4096  # the input range is taken from at most this many samples


def _warn_on_parity(record: dict) -> None:
    """Warns when the bundle, correct as it is, departs from the quantized Keras model (the
    grid's snapping or the input quantizer): the check records it; the user should know."""
    keras_parity = record.get("keras")
    if keras_parity is None:
        return
    agreement = keras_parity["clear_agreement"]
    if keras_parity["outliers"] > MAX_OUTLIERS or (
            agreement is not None and agreement < MIN_AGREEMENT):
        warnings.warn(
            f"the bundle computes the Keras model with its grid weights and input quantizer, "
            f"but differs from the quantized Keras model by up to "
            f"{keras_parity['max_abs_diff']:.4g} (tolerance {keras_parity['tolerance']:.4g}"
            + ("" if agreement is None else f", top-1 agreement {100 * agreement:.2f}%")
            + "): the grid is narrower than the codebooks need, or the input quantizer is "
            "coarse. Train on the grid (uniq_tf.set_grid_bits) or export a wider one.",
            stacklevel=3)


def _check_number(value, what: str) -> float:
    return checks.check_number(value, what)


def _write_model(tmp: Path, wrapper: ModelWrapper, graph: onnx_graph.GraphResult) -> None:
    """model.onnx and codebooks.npz into the bundle being written."""
    wrapper.save(str(tmp / "model.onnx"))
    _write_npz(tmp / "codebooks.npz", graph)


def _check_inputs(model, shape, check_data, x_data, bounds) -> tuple[np.ndarray, str]:
    """The inputs of shape ``shape`` the check runs on (without data: uniform inside
    ``bounds``, the stated range or the input quantizer's), and where they come from (in
    words)."""
    if check_data is not None:
        x = inputs.samples(check_data, model, CHECK_SAMPLES, "check_data")
        return x, f"{len(x)} samples of check_data"
    if x_data is not None:
        x = x_data[:CHECK_SAMPLES]
        return x, f"{len(x)} samples of the data"
    lo, hi = bounds
    x = np.random.default_rng(0).uniform(lo, hi, (CHECK_SAMPLES, *shape))
    return x.astype(np.float32), (f"{CHECK_SAMPLES} random inputs, uniform in the "
                                  f"input range [{lo:g}, {hi:g}]")
