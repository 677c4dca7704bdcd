"""The text files of a FINN bundle: descriptor, FINN build configs, metadata and README."""

from __future__ import annotations

import json
import math
from importlib.metadata import PackageNotFoundError, version

import uniq_tf
from fpga_export import costs, folding
from fpga_export.actquant import QuantParams
from fpga_export.onnx_graph import INPUT_NAME, OUTPUT_NAME, ComputeLayer, GraphResult

# FINN's board -> (FPGA part, shell flow), from finn-plus 1.6.1's finn.util.basic part maps.
BOARDS = {
    "Pynq-Z1": ("xc7z020clg400-1", "vivado_zynq"),
    "Pynq-Z2": ("xc7z020clg400-1", "vivado_zynq"),
    "Ultra96": ("xczu3eg-sbva484-1-e", "vivado_zynq"),
    "Ultra96-V2": ("xczu3eg-sbva484-1-i", "vivado_zynq"),
    "ZCU102": ("xczu9eg-ffvb1156-2-e", "vivado_zynq"),
    "ZCU104": ("xczu7ev-ffvc1156-2-e", "vivado_zynq"),
    "ZCU111": ("xczu28dr-ffvg1517-2-e", "vivado_zynq"),
    "RFSoC2x2": ("xczu28dr-ffvg1517-2-e", "vivado_zynq"),
    "RFSoC4x2": ("xczu48dr-ffvg1517-2-e", "vivado_zynq"),
    "KV260_SOM": ("xck26-sfvc784-2LV-c", "vivado_zynq"),
    "AUP-ZU3_8GB": ("xczu3eg-sfvc784-2-e", "vivado_zynq"),
    "U50": ("xcu50-fsvh2104-2L-e", "vitis_alveo"),
    "U200": ("xcu200-fsgd2104-2-e", "vitis_alveo"),
    "U250": ("xcu250-figd2104-2L-e", "vitis_alveo"),
    "U280": ("xcu280-fsvh2892-2L-e", "vitis_alveo"),
    "U55C": ("xcu55c-fsvh2892-2L-e", "vitis_alveo"),
}
# finn-plus 1.6.1's estimate_only_dataflow_steps (everything up to the estimate reports, nothing
# that needs Vivado), with step_streamline replaced by the bundle's finn_steps.py.
STEPS_MODULE = "finn_steps"
ESTIMATE_STEPS = [
    "step_qonnx_to_finn",
    "step_tidy_up",
    "step_uniq_streamline",
    "step_convert_to_hw",
    "step_minimize_bit_width_initial",
    "step_create_dataflow_partition",
    "step_specialize_layers",
    "step_target_fps_parallelization",
    "step_apply_folding_config",
    "step_minimize_bit_width",
    "step_generate_estimate_reports",
]
METADATA_PREFIX = "uniq_tf"
BUILD_DIR = "finn_build"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def tool_versions() -> dict:
    return {
        "uniq_tf": uniq_tf.__version__,
        **{p: _version(p) for p in ("qonnx", "onnx", "tensorflow", "tf-keras")},
    }


def _codebook_record(layer: ComputeLayer) -> dict:
    codebook, grid = layer.codebook, layer.grid
    return {
        "bits": codebook.bits,
        "distribution": codebook.distribution,
        "per_channel": codebook.levels.ndim == 2,
        "channel_axes": list(codebook.channel_axes or ()),
        "levels": codebook.levels.tolist(),
        "grid_bits": grid.bits,
        "grid_levels": grid.levels.reshape(codebook.levels.shape).tolist(),
        "grid_scale": grid.scale.tolist() if grid.scale.size > 1 else float(grid.scale[0]),
        "grid_max_abs_error": float(grid.error.max()),
        "grid_max_relative_error": float(grid.relative_error.max()),
    }


def metadata_props(graph: GraphResult) -> dict[str, str]:
    """ONNX metadata: the tool version and each quantized layer's codebook (JSON)."""
    props = {f"{METADATA_PREFIX}.version": uniq_tf.__version__}
    for layer in graph.layers:
        if layer.codebook is not None:
            props[f"{METADATA_PREFIX}.codebook.{layer.name}"] = json.dumps(_codebook_record(layer))
    return props


def finn_notes(graph: GraphResult) -> list[str]:
    """What keeps FINN's build (with finn_steps.py) from mapping the whole graph."""
    return graph.finn_notes + [
        f"{layer.name!r} has float weights and does not become a FINN compute layer"
        for layer in graph.layers if layer.grid is None
    ]


def _quant_record(params: QuantParams) -> dict:
    return {
        "bits": params.bits, "scale": params.scale, "zero_point": params.zero_point,
        "signed": params.signed, "min": params.min_value, "max": params.max_value,
    }


def _layer_record(
    layer: ComputeLayer, cost: dict, fold: folding.Folding | None, rule: str | None
) -> dict:
    record = {
        "name": layer.name,
        "keras_type": layer.keras_type,
        "onnx_op": layer.onnx_op,
        "onnx_node": layer.onnx_node,
        "input_shape_nhwc": list(layer.input_shape),
        "output_shape_nhwc": list(layer.output_shape),
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "kernel_size": list(layer.kernel_size),
        "groups": layer.groups,
        "output_pixels": layer.out_pixels,
        "weights": layer.weight_count,
        "quantized": layer.codebook is not None,
        "fixed_weights": layer.fixed,
        "codebook": ({**_codebook_record(layer), "grid_rule": rule}
                     if layer.codebook is not None else None),
        **cost,
        "finn": None,
    }
    if fold is not None:
        record["finn"] = {
            "node": fold.node, "MH": fold.mh, "MW": fold.mw, "PE": fold.pe, "SIMD": fold.simd,
            "cycles_per_frame": fold.cycles,
        }
    return record


def descriptor(
    model_name: str,
    input_shape: tuple[int, int, int],
    input_quant: QuantParams,
    graph: GraphResult,
    rows: list[dict],
    activations: dict[str, QuantParams],
    foldings: list[folding.Folding],
    qonnx_cost: dict | None,
    grid_tolerance: float,
    grid_rules: dict[str, tuple[str, str]],
    grid_selection: dict | None,
) -> dict:
    """The content of descriptor.json. ``grid_rules``: codebook key -> (the rule that chose
    its B, that rule in words); ``grid_selection``: the record of the "auto" search or None."""
    by_layer = {f.layer: f for f in foldings}
    h, w, c = input_shape
    output_dims = graph.model.graph.output[0].type.tensor_type.shape.dim
    totals = costs.totals(rows)
    totals["qonnx_inference_cost"] = qonnx_cost
    if foldings:
        slowest = max(f.cycles for f in foldings)
        totals["compute_cycles_per_frame"] = slowest
    issues = finn_notes(graph)
    return {
        "format": "uniq_tf FINN bundle",
        "tool_versions": tool_versions(),
        "model": model_name,
        "input": {
            "name": INPUT_NAME, "layout": "NCHW", "shape": [1, c, h, w],
            "keras_shape_nhwc": [1, h, w, c], "quant": _quant_record(input_quant),
        },
        "output": {"name": OUTPUT_NAME, "shape": [d.dim_value for d in output_dims]},
        "weight_grid": {
            "snap": "n_i = clip(round(level_i / s), -(2^(B-1)-1), 2^(B-1)-1), s chosen per "
                    "codebook row to minimize max_i |s n_i - level_i| "
                    "(uniq_tf.method.kquantile.snap_to_grid)",
            "rules": dict(sorted(set(grid_rules.values()))),
            "tolerance": grid_tolerance,
            "selection": grid_selection,
            "onnx_form": "Quant(n, scale=1, zero_point=0, bitwidth=B, signed=1, narrow=1) -> "
                         "Conv/MatMul -> Mul(s) -> Add(bias)",
        },
        "bops_formulas": {
            "paper": "m n k^2 (b_a b_w + b_a + b_w + log2(n k^2)) P (uniq_tf.cost.bops.conv_bops)",
            "simple": "MACs * b_w * b_a (qonnx.util.inference_cost's total_bops)",
            "index_bits": "b_w = b, the codebook index width (a look-up-table design)",
            "grid_bits": "b_w = B, the integer grid width FINN computes with",
            "input_bits": "b_a = the width of the nearest activation quantizer (or input) "
                          "upstream, through layers that keep it; 32 if float "
                          "(uniq_tf.integration.registry.keeps_bit_width, as uniq_tf.summary)",
        },
        "layers": [_layer_record(layer, cost, by_layer.get(layer.name),
                                 grid_rules.get(layer.name, (None,))[0])
                   for layer, cost in zip(graph.layers, rows, strict=True)],
        "activations": {name: _quant_record(p) for name, p in activations.items()},
        "totals": totals,
        "finn_compatible": not issues,
        "finn_notes": issues,
    }


def build_config(
    board: str, clock_ns: float, target_fps: float | None, threshold_bits: int | None = None
) -> dict:
    """FINN's DataflowBuildConfig fields for an estimate-only build (paths relative to the
    bundle directory; run FINN from there). ``threshold_bits``: activation quantizers wider
    than FINN's default of 8 bits that must still become thresholds."""
    part, shell = BOARDS[board]
    config = {
        "output_dir": BUILD_DIR,
        "synth_clk_period_ns": clock_ns,
        "board": board,
        "fpga_part": part,
        "shell_flow_type": shell,
        "folding_config_file": "folding_config.json",
        "specialize_layers_config_file": "specialize_layers_config.json",
        "generate_outputs": ["estimate_reports"],
        "steps": ESTIMATE_STEPS,
    }
    if target_fps is not None:
        config["target_fps"] = int(math.ceil(target_fps))
    if threshold_bits is not None:
        config["max_multithreshold_bit_width"] = threshold_bits
    return config


def specialize_config() -> dict:
    """Every MVAU/VVAU in its HLS variant, so that their names are predictable."""
    return {"Defaults": {"preferred_impl_style": [folding.IMPL_STYLE, ["MVAU", "VVAU"]]}}


def _layer_table(desc: dict) -> str:
    lines = [
        "| layer | op | b | B | B chosen by | b_a | MACs | BOPs (paper, b) | MACs x B x b_a | "
        "FINN node | PE | SIMD |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in desc["layers"]:
        finn = row["finn"] or {}
        rule = ((row["codebook"] or {}).get("grid_rule")
                or ("fixed [I; 0]" if row.get("fixed_weights") else "-"))
        lines.append(
            f"| {row['name']} | {row['keras_type']} | {row['weight_index_bits']} | "
            f"{row['weight_grid_bits']} | {rule} | {row['input_bits']} | {row['macs']:,} | "
            f"{row['bops_paper_index_bits']:.4g} | {row['bops_simple_grid_bits']:,} | "
            f"{finn.get('node', '-')} | {finn.get('PE', '-')} | {finn.get('SIMD', '-')} |"
        )
    return "\n".join(lines)


def _grid_text(desc: dict) -> str:
    """How each B was chosen and, for the "auto" search, what it measured."""
    grid = desc["weight_grid"]
    lines = [f"- `{name}`: {words}" for name, words in grid["rules"].items()]
    selection = grid["selection"]
    if selection is not None:
        fallback, chosen = selection["fallback"], selection["chosen"]
        lines.append(
            f"\nThe search ({selection['search']}) scored {selection['metric']} on "
            f"{selection['samples']:,} examples, tolerance {selection['tolerance']:g}: the Keras "
            f"model {selection['keras']:.4f}; the exported model at the fallback widths "
            f"{fallback['bits']} {fallback['score']:.4f}, at the chosen widths "
            f"{chosen['bits']} {chosen['score']:.4f} ({selection['forward_passes']} forward "
            "passes)."
        )
    return "\n".join(lines)


def _parity_text(parity: dict) -> str:
    agreement = "" if parity["top1_agreement"] is None else (
        f", top-1 agreement {100 * parity['top1_agreement']:.2f} %"
        + ("" if parity["clear_agreement"] is None else
           f" ({100 * parity['clear_agreement']:.2f} % on the {parity['clear_rows']} rows "
           "without a near tie)"))
    return (f"max |diff| {parity['max_abs_diff']:.4g}, tolerance {parity['tolerance']:.4g} "
            f"({parity['rtol']:g} of the outputs' range {parity['output_range']:.4g}), "
            f"exceeded on {100 * parity['outliers']:.1f} % of the samples{agreement}")


def _check_text(desc: dict) -> str:
    """How the input quantizer was found, and what was checked, with figures and tolerances."""
    quant, record = desc["input"]["quant"], desc.get("check") or {"status": "unchecked"}
    lines = [
        f"Input quantizer: {quant['bits']}-bit {'signed' if quant['signed'] else 'unsigned'}, "
        f"scale {quant['scale']:.6g}, range [{quant['min']:.6g}, {quant['max']:.6g}] "
        f"({desc['input'].get('how', 'stated')}).",
    ]
    if record["status"] == "unchecked":
        lines.append("\n**Unchecked**: exported with check=False; model.onnx was not compared "
                     "with the Keras model.")
        return "\n".join(lines)
    lines += [
        f"\n**Checked** ({record['status']}): model.onnx run in qonnx on {record['inputs']}; "
        f"{100 * record['input_clipped']:.2f} % of their values outside the input range (at "
        f"most {100 * record['max_input_clipped']:g} %).",
        f"\n- against {record['graph']['reference']} (must hold on all but "
        f"{100 * record['max_outliers']:g} % of the samples, top-1 agreement at least "
        f"{100 * record['min_agreement']:g} %): {_parity_text(record['graph'])};",
        f"- against {record['keras']['reference']}: {_parity_text(record['keras'])}.",
    ]
    return "\n".join(lines)


def readme(desc: dict, config: dict) -> str:
    """README.md of the bundle."""
    totals = desc["totals"]
    qonnx = totals["qonnx_inference_cost"]
    shape = desc["input"]["shape"]
    quant = desc["input"]["quant"]
    notes = "\n".join(f"- {n}" for n in desc["finn_notes"]) or "- none"
    memory = ", ".join(f"{key.removesuffix('_bits')} {value:,}"
                       for key, value in totals["weight_memory"].items())
    return f"""# FINN bundle of `{desc['model']}` (uniq_tf {desc['tool_versions']['uniq_tf']})

{_check_text(desc)}

| file | content |
|---|---|
| `model.onnx` | QONNX graph, NCHW input `{INPUT_NAME}` of shape {shape} (float, quantized inside \
to {quant['bits']} bits, scale {quant['scale']:.6g}), output `{OUTPUT_NAME}` |
| `codebooks.npz` | per layer `<name>/levels`, `<name>/indices` (b-bit, Keras kernel layout), \
`<name>/grid_levels`, `<name>/grid_scale`, `<name>/channel_axes` |
| `descriptor.json` | per layer shapes, bit widths, codebooks, grid, MACs, BOPs, memory; totals |
| `dataflow_build_config.json` | FINN `DataflowBuildConfig` (estimate-only steps) |
| `folding_config.json` | PE/SIMD per FINN compute layer |
| `specialize_layers_config.json` | HLS variant for every MVAU/VVAU (fixes the node names) |
| `finn_steps.py` | the build step `step_uniq_streamline` the config names |

## Running FINN

FINN (the `finn-plus` package) needs its own Python environment (about 6 GB with torch):

    python3 -m venv finn-venv && finn-venv/bin/pip install finn-plus psutil

From this directory (the config's paths are relative to it):

```python
import sys
from pathlib import Path

sys.path.insert(0, ".")
import finn_steps  # registers step_uniq_streamline, which the config's steps name
from finn.builder.build_dataflow import build_dataflow_cfg
from finn.builder.build_dataflow_config import DataflowBuildConfig

cfg = DataflowBuildConfig.from_json(Path("dataflow_build_config.json").read_text())
build_dataflow_cfg("model.onnx", cfg)
```

writes `{config['output_dir']}/report/estimate_layer_resources.json` (LUT, BRAM, DSP per layer),
`estimate_network_performance.json` and `op_and_param_counts.json`. `finn_steps.py` is FINN's
streamlining plus two graph rewrites Keras models need (its docstring says which). Without
Vivado installed, call `finn.util.settings.initialize_dummy_settings()` and put a stub module
in `sys.modules["finn.xsi"]` first; the uniq_tf repository's `examples/finn_estimate.py` does
all of this. For a bitstream (on a machine with Vivado), set `steps` to FINN's
`default_build_dataflow_steps` with `step_streamline` replaced by `step_uniq_streamline`, and
add `"bitfile"` to `generate_outputs`.

FINN's folding config names nodes after its own renaming (`MVAU_hls_<i>`, `VVAU_hls_<i>` in
graph order); `target_fps` in the build config (when given) lets FINN fold the other layers
(sliding windows, thresholds) for the same rate.

## This model

{_layer_table(desc)}

Grid width B, chosen by:
{_grid_text(desc)}

Totals: {totals['macs']:,} MACs; BOPs (paper, index bits b) {totals['bops_paper_index_bits']:.6g};
MACs x B x b_a = {totals['bops_simple_grid_bits']:,} (qonnx inference_cost: \
{'not run' if qonnx is None else f"{qonnx['total_bops']:,.0f}"}). Weight memory (bits): {memory}.

FINN notes:
{notes}

## Reference estimate (digits demo CNN)

{REFERENCE_ESTIMATE}
"""


REFERENCE_ESTIMATE = """\
FINN's estimate-only build (finn-plus 1.6.1, Pynq-Z1, 100 MHz) of `small_cnn` from
`examples/train.py` (UNIQ W4A8, digits 8x8 input at 5 bits; grid B = 10 bits for every layer,
which holds the 4-bit codebooks within 1% of their level gap). Every quantized layer became an
MVAU; LUT/BRAM_18K are FINN's estimates (DSP 0: the HLS MVAUs use LUTs):

| target_fps | B | conv1 | conv2 | conv3 | fc | total LUT / BRAM_18K | FINN's estimated fps |
|---|---|---|---|---|---|---|---|
| none (PE = SIMD = 1) | 10 | 417 / 1 | 446 / 18 | 446 / 36 | 523 / 1 | 4,477 / 56 | 85 |
| 1,000 | 10 | 417 / 1 | 1,994 / 14 | 1,147 / 24 | 523 / 1 | 6,006 / 40 | 1,017 |
| 10,000 | 10 | 535 / 1 | 18,533 / 36 | 9,416 / 36 | 523 / 1 | 30,932 / 74 | 10,434 |
| 10,000 | 8 | 504 / 1 | 16,316 / 29 | 8,308 / 29 | 503 / 1 | 27,556 / 60 | 10,434 |

With narrower grids (`bench/fpga/`, another training run of the same model, 99.1-99.3 % test
accuracy in Keras and ONNX alike): at 1,000 fps, B = 10 takes 6,006 LUT / 40 BRAM_18K,
`weight_grid_bits="auto"` (B = 6/5/4/4) 4,933 / 22, and grid-aware fine-tuning at B = 5
(`uniq_tf.set_grid_bits`) 5,143 / 22; at 10,000 fps 30,932 / 74, 20,721 / 35 and 22,981 / 38.

The same build of a residual model (stem conv, a two-conv basic block with batch norm and an
identity Add, global average pool, dense; W4A8, target_fps 2,000, B = 10): every quantized layer
became an MVAU; stem 417 / 1, block convs 722 / 2 each, fc 445 / 3; total 5,958 LUT / 8 BRAM_18K,
FINN's estimated 2,035 fps. The residual Add and the scale Muls run as elementwise layers that
FINN's estimator prices at 0 LUT, so that total is a lower bound. A model with a depthwise conv
(target_fps 20,000, B = 11) mapped the depthwise layer to a VVAU (7,117 LUT / 0 BRAM_18K).

(The Pynq-Z1's XC7Z020 has 53,200 LUTs and 280 BRAM_18K.)"""
