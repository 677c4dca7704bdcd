"""Section 6 of docs/benchmarks.md: the captions of what was run, the section text assembled
from the tables and fits, filled to the page's width, and its splice between the page's fpga
markers."""

from __future__ import annotations

from pathlib import Path

from bench.fpga.fits import fit_rows
from bench.fpga.results import load, read_bundle_json, runs_of, sweep_points
from bench.fpga.settings import AUTO_TOLERANCE, DIGITS_INPUT, PYNQ_Z1, VALIDATION_SIZE
from bench.fpga.tables import (
    fit_table,
    kinds_table,
    mapping_table,
    ratio_table,
    sweep_table,
    uniform_table,
    variants_table,
)

FIGURE = "img/fpga_bops_lut.png"
COMMANDS = """\
Commands (from the repository root; outputs in `outputs/bench/fpga/`):

    .venv/bin/python -m bench.fpga export --weight_bits=2,3,4
    .venv/bin/python -m bench.fpga export --models=resnet20
    .venv/bin/python -m bench.fpga sweep --models=small_cnn,resnet20
    finn-venv/bin/python -m bench.fpga estimate
    .venv/bin/python -m bench.fpga table --plot=docs/img/fpga_bops_lut.png \\
        --docs=docs/benchmarks.md"""
HEADING = ("## 6. FPGA resources: FINN estimates of the exported bundles (`bench/fpga/`, "
           "run by hand)")
VARIANTS = """\
- `default`: no grid in training; `export_finn`'s data-free rule (each codebook's smallest \
grid within 1 % of its level gap).
- `auto`: no grid in training; `export_finn(..., validation_data=x_val, \
validation_tolerance={tolerance:g})`, which selects `weight_grid_bits="auto"`: per layer the \
smallest widths whose model keeps top-1 agreement with Keras within {tolerance_pct:g} % on the \
{validation} held-out training images.
- `grid_b+1`, `grid_b`: the last two epochs on the (b + 1)-bit or b-bit grid \
(`uniq_tf.set_grid_bits`), exported by default (the trained grid is kept).
- `uniform`: TFMOT's uniform b-bit QAT (`bench.peers.uniform_qat`: per channel, symmetric, \
narrow range from 3 bits, full range at 2) from the same float model with the same schedule \
(ranges set, activations calibrated, 2 epochs Adam 5e-4, 2 epochs Adam 1e-4), exported through \
the same path: its batch norms and activation ranges copied into a UNIQ-layout model and its \
kernels, as TFMOT quantizes them, given as per-channel uniform codebooks \
(`export_finn(..., codebooks=...)`)."""


def _machine_text(machine: dict) -> str:
    return (f"{machine['cores']}-core {machine['cpu']}, Python {machine['python']}, TensorFlow "
            f"{machine['tensorflow']}, tf-keras {machine['tf_keras']}, "
            f"TFMOT {machine['tfmot']}")


def _finn_text(output_dir: Path | None, bundles: list[str], finn: dict) -> str:
    """FINN's version, the board and clock of the builds, their dates and summed wall time."""
    done = [finn[b] for b in bundles if "LUT" in finn.get(b, {})]
    if not done:
        return "FINN: no estimates yet."
    versions = sorted({e.get("finn_version") or "?" for e in done})
    dates = sorted(e["date"] for e in done if e.get("date"))
    config = next((c for c in (read_bundle_json(output_dir, b, "dataflow_build_config.json")
                               for b in bundles) if c), None)
    where = (f", board {config['board']} ({config['fpga_part']}) at "
             f"{1000 / config['synth_clk_period_ns']:g} MHz" if config else "")
    return (f"FINN (finn-plus {', '.join(versions)}, in its own environment) estimate-only "
            f"builds{where}, one at a time"
            + (f", {dates[0]} to {dates[-1]}" if dates else "")
            + f": {len(done)} builds, {sum(e.get('seconds', 0) for e in done):,.0f} s in all.")


def run_caption(data: dict, output_dir: Path | None = None) -> str:
    """What was run, when, where and how long (from export.json, sweep.json, estimate.json)."""
    export_runs, sweep_runs = runs_of(data["export"]), runs_of(data["sweep"])
    items = []
    for kind, run in [("Exports", r) for r in export_runs] + [("Sweep", r) for r in sweep_runs]:
        models = sorted({r["model"] for r in run["rows"] + run.get("failed", [])})
        what = ", ".join(f"`{m}`" for m in models)
        if kind == "Exports":
            widths = ",".join(str(b) for b in sorted({r["weight_bits"] for r in run["rows"]}))
            what += f" at W{widths}A8"
        seconds = f" after {run['seconds']:,.0f} s" if "seconds" in run else ""
        items.append((f"{kind} of {what}: ended {run['machine']['date']}{seconds}",
                      _machine_text(run["machine"])))
    machines = list(dict.fromkeys(m for _, m in items))
    lines = []
    if items:
        lines.append("\n".join(f"- {text}" + ("" if len(machines) == 1 else f" ({machine})")
                                + "." for text, machine in items))
        if len(machines) == 1:
            lines.append(f"Machine: {machines[0]}.")
    bundles = [r["bundle"] for run in export_runs + sweep_runs for r in run["rows"]]
    lines.append(_finn_text(output_dir, bundles, data["finn"]))
    images = next((run["images"] for run in export_runs if "images" in run), None)
    digits = (f"scikit-learn's 8x8x1 digits ({images['train']} training, "
              f"{images['validation']} validation, {images['test']} test images; one test image "
              f"is {100 / images['test']:.2f} points)" if images else "the 8x8x1 digits")
    quant = DIGITS_INPUT
    lines.append(
        f"Data: {digits}, model input quantized to {quant['input_bits']} bits, scale "
        f"1/{1 / quant['input_scale']:g}, {'signed' if quant['input_signed'] else 'unsigned'} "
        "(exact for pixel counts 0..16 / 16); seed 0 and op determinism, one run per row.")
    return "\n\n".join(lines)


def _folding_text(run: dict) -> str:
    folding = run.get("folding") or {}
    nodes = [(k, v) for k, v in folding.items() if k != "Defaults" and "PE" in v]
    return ", ".join(f"{v['PE']}x{v.get('SIMD', 1)}" for _, v in nodes)


def sweep_caption(data: dict) -> str:
    """What the sweep ran: models, widths, the folding per model, the definitions."""
    runs = runs_of(data["sweep"])
    lines = []
    for run in runs:
        rows = run["rows"]
        name = rows[0]["model"]
        w = sorted({r["weight_bits"] for r in rows})
        a = sorted({r["activation_bits"] for r in rows})
        quantizers = sorted({r.get("activation_quantizers") for r in rows} - {None})
        lines.append(
            f"`{name}`: W{w[0]}..{w[-1]} x A{', A'.join(map(str, a))} ({len(rows)} points), "
            + (f"{', '.join(map(str, quantizers))} activation quantizers, " if quantizers else "")
            + f"one folding for every point: the one `export_finn` picks for "
            f"{run.get('target_fps', 0):,.0f} fps at W{w[-1]}A{a[-1]} (PE x SIMD per MVAU in "
            f"FINN's node order: {_folding_text(run) or '-'}).")
    return ("**BOPs against logic.** Post-training UNIQ at b-bit weights and a-bit "
            "activations of each model's float model "
            "(the variants' float model: same seed, 5 epochs), no fine-tune, activations "
            "calibrated on 512 training images, weights on the b-bit grid (B = b, "
            "`uniq_tf.set_grid_bits`), exported and built by FINN as above:\n\n"
            + "\n".join(f"- {line}" for line in lines)
            + "\n\nBOPs: `uniq_tf.summary`'s total, the paper's count m n k^2 (b_a b_w + b_a + "
            "b_w + log2(n k^2)) per layer, model input at "
            f"{DIGITS_INPUT['input_bits']} bits; MACs x W x A: its `total_bops_simple` "
            "(qonnx's count). T: the thresholds, summed over the model's activation quantizers, "
            "channels x (2^A - 1), plus the input quantizer's channels x (2^"
            f"{DIGITS_INPUT['input_bits']} - 1); T in FINN: channels x steps of the Thresholding "
            "nodes and of "
            "the MVAUs that carry thresholds in FINN's folded graph. LUT in Thresholding: the "
            "standalone Thresholding nodes' LUT (thresholds inside an MVAU count in its LUT).")


FIT_CAPTION = (
    "Least squares of FINN's LUT estimate (total, and the MVAUs' alone) on each predictor over "
    "the sweep's points: of one model at one activation width (A = 4 or 8), of one model at "
    "both (A = all), of both models (model = all). `BOPs`: LUT = a BOPs + d; `BOPs, T`: "
    "LUT = a BOPs + b T + d, that is a (BOPs + c T) + d with c = b / a, T the threshold count "
    "above (where every point of the group has the same T, b is not determined and the fit is "
    "the BOPs one). R^2 = 1 - (residual sum of squares) / (total sum of squares).")


def section_text(data: dict, output_dir: Path | None = None, figure: str | None = FIGURE) -> str:
    """Section 6 of docs/benchmarks.md (between its fpga markers): captions of what was run,
    tables and fits computed from ``data`` (``load``), the figure and the commands. The words
    that interpret the numbers are hand-written in bench/findings.md."""
    parts = [HEADING,
             "Generated by `python -m bench.fpga table` from `outputs/bench/fpga` (export.json, "
             "sweep.json, estimate.json); what the numbers mean is in Findings "
             "(bench/findings.md).",
             run_caption(data, output_dir)]
    if data["export"]:
        parts += [
            "**Variants.** Each model and weight width b: a float model (5 epochs, Adam 3e-3), "
            "UNIQ at b-bit weights and 8-bit activations (`quantize_model`'s defaults, "
            "activations calibrated, 2 epochs Adam "
            "5e-4), then 2 epochs in QUANTIZED mode (Adam 1e-4, same seed and data order for "
            "every variant), on the training images less the validation ones. The variants "
            "differ by the weight grid only:",
            VARIANTS.format(tolerance=AUTO_TOLERANCE, tolerance_pct=100 * AUTO_TOLERANCE,
                            validation=VALIDATION_SIZE),
            "Accuracies on the test images (ONNX: qonnx's executor on model.onnx); max abs diff "
            "and top-1 agreement: ONNX against Keras logits on the same images; FINN fps: "
            "FINN's estimate at the target fps; within Pynq-Z1: LUT and BRAM_18K at most the "
            f"XC7Z020's {PYNQ_Z1['LUT']:,} and {PYNQ_Z1['BRAM_18K']:,}. B per layer: the "
            "integer grid width of each quantized layer in the descriptor's order (`fixed`: the "
            "fixed layers, ResNet-20's option-A shortcuts exported as 1x1 stride-2 convs with "
            "constant [I; 0] weights).",
            variants_table(data, output_dir),
            "FINN's graph of every bundle, checked node by node: its compute layers, their "
            "sizes (MW, MH) against the descriptor and their PE, SIMD against the bundle's "
            "folding config:",
            mapping_table(data, output_dir),
            "Against the `default` bundle (the data-free B) of the same model, W and fps "
            "(largest B over the UNIQ layers; ONNX - Keras in accuracy points):",
            ratio_table(data, output_dir),
        ]
        kinds = kinds_table(data, output_dir)
        if kinds:
            parts += ["FINN's LUT estimate by node kind, `default` bundles, and the LUT outside "
                      "the MVAUs over all variants of the same model, W and fps:", kinds]
        uniform = uniform_table(data)
        if uniform:
            parts += ["UNIQ on the b-bit grid (`grid_b`) against the uniform b-bit model "
                      "(`uniform`), same model, W and fps:", uniform]
    if data["sweep"]:
        points = sweep_points(data)
        parts += [sweep_caption(data), sweep_table(data)]
        if points:
            parts += [FIT_CAPTION, fit_table(fit_rows(points))]
        if figure:
            parts.append(f"![FINN LUT against BOPs]({figure})")
    parts.append(COMMANDS)
    return "\n\n".join(p for p in parts if p)


def wrap(text: str, width: int = 95) -> str:
    """Paragraphs and list items filled to ``width`` (tables, headings, images and indented
    code left as they are)."""
    import textwrap

    blocks = []
    for block in text.split("\n\n"):
        if block.startswith(("|", " ", "#", "!", "<!--")):
            blocks.append(block)
        elif block.startswith("- "):
            blocks.append("\n".join(
                textwrap.fill(item, width, initial_indent="- ", subsequent_indent="  ",
                              break_long_words=False, break_on_hyphens=False)
                for item in block[2:].split("\n- ")))
        else:
            blocks.append(textwrap.fill(block, width, break_long_words=False,
                                        break_on_hyphens=False))
    return "\n\n".join(blocks)


def write_docs(output_dir: Path, path: Path, figure: str | None = FIGURE) -> None:
    """Rewrites section 6 of ``path`` (between its fpga markers) with ``section_text``."""
    from bench import common

    page = path.read_text()
    if common.section_of(page, "fpga") is None:
        raise SystemExit(f"{path} has no fpga section (<!-- fpga:start --> ... end)")
    start, end = common.section_markers("fpga")
    text = wrap(section_text(load(output_dir), output_dir, figure))
    common.write_text(str(path), common.splice_section(page, "fpga", f"{start}\n{text}\n{end}\n"))
