"""The hardware section: FINN's resource estimates for UNIQ's FPGA bundles.

Run by hand, outside CI, from the repository root as a module, in two environments (FINN's
``finn-plus`` lives in its own venv, see examples/finn_estimate.py for its setup):

    .venv/bin/python -m bench.fpga export --weight_bits=2,3,4          # ~1 min / width
    .venv/bin/python -m bench.fpga export --models=resnet20            # W4, ~5 min
    .venv/bin/python -m bench.fpga sweep                               # ~1 min
    /work/finn-venv/bin/python -m bench.fpga estimate   # per bundle ~10 s, resnet20 ~1 min
    .venv/bin/python -m bench.fpga table --plot=docs/img/fpga_bops_lut.png \
        --docs=docs/benchmarks.md

(outputs in ``outputs/bench/fpga``; an export keeps the rows of the models and widths it did
not run). ``export`` (project venv) trains each model once per
weight width b on the digits (seed 0, op determinism): 5 float epochs (Adam 3e-3), then UNIQ
W{b}A8 (``quantize_model``'s defaults), activations calibrated, 2 epochs (Adam 5e-4), then 2
epochs in QUANTIZED mode (Adam 1e-4), all on the training split less its last
``VALIDATION_SIZE`` images, which are the validation data of "auto". The last two epochs are
the same for every UNIQ variant (same seed and data order) but for the grid:

    default     no grid in training; export_finn's data-free rule (smallest B within 1% of
                each codebook's level gap)
    auto        no grid in training; export_finn(validation_data=...), which selects
                weight_grid_bits="auto": top-1 agreement with Keras within 0.5% on the
                validation images
    grid_b+1    the last two epochs on the (b + 1)-bit grid (uniq_tf.set_grid_bits); the
                default export keeps that grid
    grid_b      the same on the b-bit grid (B = b: 2^b levels on 2^b - 1 integers)
    uniform     the baseline: TFMOT's uniform b-bit QAT (bench.peers.uniform_qat: per
                channel, symmetric, narrow range from 3 bits, full range at 2) from the same
                float model with the same schedule (2 epochs Adam 5e-4, 2 epochs Adam 1e-4),
                exported through the same path: its weights, activation ranges and batch
                norms moved into a UNIQ-layout model and its kernels, exactly as TFMOT
                quantizes them, given as per-channel uniform codebooks
                (export_finn(codebooks=...)), so the bundle computes what the TFMOT model does

it writes one bundle per target throughput and records the widths, the Keras and ONNX test
accuracy (qonnx's executor on the 450 test images) and the weight memory in export.json.
``sweep`` (BOPs against logic) exports post-training UNIQ W{b}A{a} models (b = 2..8, a = 4, 8;
no fine-tune) on the b-bit grid with one folding for all, and records the BOPs
``uniq_tf.summary`` reports. ``estimate`` (FINN's venv; no TensorFlow needed) runs
examples/finn_estimate.py on every bundle, one process at a time, and collects total LUT, the
LUT of the MVAUs, BRAM_18K, FINN's estimated throughput, and whether FINN's MVAUs have the
sizes and folding the descriptor gives the layers the folding config names (FINN numbers them
in its own graph order) in estimate.json. ``table`` prints the markdown tables, the
least-squares fits of LUT against BOPs with their R^2, and the plot; with ``--docs`` it
rewrites the ResNet-20 part and the commands of docs/benchmarks.md section 6 (the nested
``fpga-resnet20`` and ``fpga-commands`` markers, bench.common.splice_section).

ResNet-20 runs on the 8x8 digits (``--models=resnet20``; CIFAR-10 is not available
offline). Its option-A shortcuts export as 1x1 stride-2 convs with constant [I; 0] weights
(fpga_export.onnx_graph), fixed 2-bit MVAUs in FINN; their B is 2 in every variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALIDATION_SIZE = 360
AUTO_TOLERANCE = 0.005
DIGITS_INPUT = {"input_bits": 5, "input_scale": 1 / 16}
EXPORT_FILE = "export.json"
ESTIMATE_FILE = "estimate.json"
SWEEP_FILE = "sweep.json"


def _write_json(path: Path, content) -> None:
    """Atomic: a reader never sees half a file (no uniq_tf import: FINN's venv runs this)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)


def _float(name: str, x_train, y_train):
    """The float model every variant of ``name`` starts from: 5 epochs, Adam 3e-3, seed 0."""
    from bench import common
    from uniq_tf._keras import keras
    from uniq_tf.zoo import models

    common.set_seed(0)
    model = getattr(models, name)(input_shape=(8, 8, 1), num_classes=10)
    model.compile(keras.optimizers.Adam(3e-3), LOSS())
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    return model


def LOSS():  # noqa: N802 (a constant that needs TensorFlow, built lazily)
    from uniq_tf._keras import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _train(float_model, weight_bits: int, x_train, y_train):
    from uniq_tf import calibrate_activations, quantize_model
    from uniq_tf._keras import keras

    quantized = quantize_model(float_model, weight_bits=weight_bits, activation_bits=8)
    calibrate_activations(quantized, [x_train[:512]], verbose=False)
    quantized.compile(keras.optimizers.Adam(5e-4), LOSS())
    quantized.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return quantized


def _uniform(float_model, weight_bits: int, x_train, y_train):
    """TFMOT's uniform b-bit QAT (bench.peers.uniform_qat, per channel, symmetric; narrow
    range from 3 bits) on the same float model with UNIQ's schedule: ranges set, activations
    calibrated, 2 epochs Adam 5e-4, then 2 epochs Adam 1e-4 from seed 0."""
    from bench import common, peers
    from uniq_tf import calibrate_activations
    from uniq_tf._keras import keras

    model = peers.uniform_qat(float_model, weight_bits, 8)
    peers.set_uniform_ranges(model)
    calibrate_activations(model, [x_train[:512]], verbose=False)
    model.compile(keras.optimizers.Adam(5e-4), LOSS())
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    common.set_seed(0)
    model.compile(keras.optimizers.Adam(1e-4), LOSS())
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return model


def uniform_grid(uniform_model):
    """Each uniform kernel of a ``bench.peers.uniform_qat`` model as TFMOT quantizes it,
    w_q = s_c n (TFMOT's fake_quant_with_min_max_vars_per_channel), written as a per-channel
    ``uniq_tf.Codebook`` of 2^b levels s_c * (lo..hi) (narrow range: 2^b - 1 values, the top
    one listed twice) and the integer n - lo of every weight. Returns (codebooks, kernels)."""
    import numpy as np

    import uniq_tf
    from bench import peers
    from uniq_tf import internals
    from uniq_tf._keras import tf
    from uniq_tf.integration.inspection import QuantizeWrapper

    codebooks, kernels = {}, {}
    for layer in uniform_model.layers:
        if not (isinstance(layer, QuantizeWrapper)
                and isinstance(layer.quantize_config, peers.UniformKernelConfig)):
            continue
        config = layer.quantize_config
        (weight, _, variables), = internals.wrapper_weight_vars(layer)
        lo_var, hi_var = variables["min_var"].numpy(), variables["max_var"].numpy()
        w_q = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            weight, lo_var, hi_var, num_bits=config.bits,
            narrow_range=config.narrow_range).numpy()
        steps = 2**config.bits - 1 - int(config.narrow_range)
        scale = (hi_var - lo_var) / steps  # the nudged range keeps the scale
        ints = np.round(w_q / scale)
        assert np.allclose(ints * scale, w_q, atol=1e-6 * np.abs(w_q).max()), layer.name
        top = 2 ** (config.bits - 1) - 1
        low = -top if config.narrow_range else -top - 1
        assert ints.min() >= low and ints.max() <= top, (layer.name, ints.min(), ints.max())
        values = np.arange(low, top + 1)
        values = np.append(values, [top] * (2**config.bits - len(values)))
        name = layer.layer.name
        codebooks[name] = uniq_tf.Codebook(
            name, "kernel", config.bits, (scale[:, None] * values[None]).astype(np.float32),
            (ints - low).astype(np.int32), (-1,), "uniform")
        kernels[name] = w_q
    return codebooks, kernels


def uniq_layout(uniform_model, float_model, weight_bits: int):
    """A ``uniq_tf.quantize_model`` model of the same architecture holding the uniform model's
    weights (kernels as TFMOT quantizes them), activation ranges and batch norms, and the
    codebooks to export it with (export_finn(..., codebooks=...)): the bundle then computes
    what the uniform model computes."""
    import uniq_tf

    codebooks, kernels = uniform_grid(uniform_model)
    target = uniq_tf.quantize_model(float_model, weight_bits=weight_bits, activation_bits=8)
    source = {w.name: w for w in uniform_model.weights}
    for weight in target.weights:  # same layer names; the quantizers' own state differs
        layer, attr = weight.name.split("/")[0], weight.name.split("/")[-1].split(":")[0]
        if attr == "kernel" and layer in kernels:
            weight.assign(kernels[layer])
        elif weight.name in source:
            weight.assign(source[weight.name])
    uniq_tf.set_weight_mode(target, uniq_tf.Mode.QUANTIZED)
    return target, codebooks


def _polish(model, grid_bits: int | None, x_train, y_train):
    """A copy of ``model`` fine-tuned 2 epochs in QUANTIZED mode (Adam 1e-4, seed 0), its
    codebooks on the ``grid_bits`` grid (None: as they are)."""
    import uniq_tf
    from bench import common
    from uniq_tf._keras import keras

    common.set_seed(0)
    with uniq_tf.quantize_scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    uniq_tf.set_grid_bits(copy, grid_bits)
    uniq_tf.set_weight_mode(copy, uniq_tf.Mode.QUANTIZED)
    copy.compile(keras.optimizers.Adam(1e-4), LOSS())
    copy.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return copy


def export(output_dir: Path, model_names: list[str], weight_bits: list[int],
           fps_list: list[float]) -> list[dict]:
    """Trains, exports every variant at every throughput; writes and returns export.json."""
    import numpy as np

    import fpga_export
    from bench import common
    from fpga_export import check
    from uniq_tf._keras import tf
    from uniq_tf.zoo import data

    tf.config.experimental.enable_op_determinism()
    x_all, y_all, x_test, y_test = data.load_digits()
    x_train, y_train = x_all[:-VALIDATION_SIZE], y_all[:-VALIDATION_SIZE]
    x_val = x_all[-VALIDATION_SIZE:]
    rows, failed = [], []
    for name in model_names:
        for bits in weight_bits:
            float_model = _float(name, x_train, y_train)
            trained = _train(float_model, bits, x_train, y_train)
            polished = _polish(trained, None, x_train, y_train)
            models_by_variant = {
                "default": (polished, polished, {}),
                "auto": (polished, polished, {"validation_data": x_val,
                                              "validation_tolerance": AUTO_TOLERANCE}),
                "grid_b+1": (*[_polish(trained, bits + 1, x_train, y_train)] * 2, {}),
                "grid_b": (*[_polish(trained, max(bits, 2), x_train, y_train)] * 2, {}),
            }
            try:
                uniform = _uniform(float_model, bits, x_train, y_train)
                layout, uniform_codebooks = uniq_layout(uniform, float_model, bits)
                models_by_variant["uniform"] = (uniform, layout, {"codebooks": uniform_codebooks})
            except Exception as err:  # noqa: BLE001 (recorded in the table instead)
                failed.append({"model": name, "weight_bits": bits, "variant": "uniform",
                               "error": f"{type(err).__name__}: {err}"[:500]})
                print(json.dumps(failed[-1]), flush=True)
            for variant, (model, exported, extra) in models_by_variant.items():
                keras_out = model.predict(x_test, verbose=0)
                for fps in fps_list:
                    bundle = output_dir / "bundles" / f"{name}_w{bits}_{variant}_{fps:g}fps"
                    try:
                        result = fpga_export.export_finn(
                            exported, bundle, target_fps=fps, overwrite=True, cost_check=False,
                            **DIGITS_INPUT, **extra)
                    except Exception as err:  # noqa: BLE001 (recorded in the table instead)
                        failed.append({"model": name, "weight_bits": bits, "variant": variant,
                                       "target_fps": fps,
                                       "error": f"{type(err).__name__}: {err}"[:500]})
                        print(json.dumps(failed[-1]), flush=True)
                        continue
                    onnx_out = check.predict(bundle, x_test)
                    desc = result.descriptor
                    rows.append({
                        "model": name, "weight_bits": bits, "variant": variant,
                        "target_fps": fps, "bundle": str(bundle.relative_to(output_dir)),
                        "grid_bits": {r["name"]: r["weight_grid_bits"] for r in desc["layers"]},
                        "keras_accuracy": float(np.mean(keras_out.argmax(-1) == y_test)),
                        "onnx_accuracy": float(np.mean(onnx_out.argmax(-1) == y_test)),
                        **check.compare(keras_out, onnx_out),
                        "weight_memory_bits": desc["totals"]["weight_memory"],
                    })
                    print(json.dumps(rows[-1]), flush=True)
    # Rows of other models and widths from earlier runs stay (with the machine they ran on).
    path = output_dir / EXPORT_FILE
    done = {(r["model"], r["weight_bits"]) for r in rows + failed}
    old = json.loads(path.read_text()) if path.exists() else {}
    machine = common.machine()
    runs = [run for run in old.get("runs", [old] if old else [])
            if any((r["model"], r["weight_bits"]) not in done for r in run["rows"])]
    for run in runs:
        run["rows"] = [r for r in run["rows"] if (r["model"], r["weight_bits"]) not in done]
        run["failed"] = [r for r in run.get("failed", [])
                         if (r["model"], r["weight_bits"]) not in done]
    runs.append({"machine": machine, "models": model_names, "weight_bits": weight_bits,
                 "rows": rows, "failed": failed})
    _write_json(path, {"runs": runs, "rows": [r for run in runs for r in run["rows"]]})
    return rows


def sweep(output_dir: Path, name: str, weight_bits: list[int], activation_bits: list[int],
          fps: float) -> list[dict]:
    """BOPs against logic: post-training UNIQ W{b}A{a} of ``name``'s float model (no
    fine-tune: accuracy is not the point), weights snapped to the b-bit grid (B = b,
    ``uniq_tf.set_grid_bits``), exported with one folding for all: the one export_finn picks
    for ``fps`` at (max b, max a), valid for every narrower grid. Writes sweep.json with the
    BOPs ``uniq_tf.summary`` reports (paper and MACs x b_w x b_a, model input at 5 bits)."""
    import warnings

    import fpga_export
    import uniq_tf
    from bench import common
    from uniq_tf._keras import tf
    from uniq_tf.zoo import data

    tf.config.experimental.enable_op_determinism()
    x_all, y_all, _, _ = data.load_digits()
    x_train, y_train = x_all[:-VALIDATION_SIZE], y_all[:-VALIDATION_SIZE]
    float_model = _float(name, x_train, y_train)
    rows, reference = [], None
    for a_bits in sorted(activation_bits, reverse=True):
        for w_bits in sorted(weight_bits, reverse=True):
            model = uniq_tf.quantize_model(float_model, weight_bits=w_bits,
                                           activation_bits=a_bits)
            uniq_tf.calibrate_activations(model, [x_train[:512]], verbose=False)
            uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
            uniq_tf.set_activation_mode(model, uniq_tf.ActMode.QUANTIZED)
            uniq_tf.set_grid_bits(model, max(w_bits, 2))
            bundle = output_dir / "sweep" / f"{name}_w{w_bits}a{a_bits}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FINN's activation-width note
                result = fpga_export.export_finn(model, bundle, target_fps=fps, overwrite=True,
                                                 cost_check=False, **DIGITS_INPUT)
            folding_path = bundle / "folding_config.json"
            if reference is None:
                reference = json.loads(folding_path.read_text())
            _write_json(folding_path, reference)
            report = uniq_tf.summary(model, input_bits=DIGITS_INPUT["input_bits"])
            rows.append({
                "model": name, "weight_bits": w_bits, "activation_bits": a_bits,
                "grid_bits": sorted({r["weight_grid_bits"] for r in result.descriptor["layers"]}),
                "bundle": str(bundle.relative_to(output_dir)),
                "bops": report.total_bops, "bops_simple": report.total_bops_simple,
                "macs": report.total_macs, "folding": reference,
            })
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "folding"}), flush=True)
    _write_json(output_dir / SWEEP_FILE, {"machine": common.machine(), "target_fps": fps,
                                          "rows": rows})
    return rows


def _rows(output_dir: Path) -> list[dict]:
    rows = []
    for name in (EXPORT_FILE, SWEEP_FILE):
        if (output_dir / name).exists():
            rows += json.loads((output_dir / name).read_text())["rows"]
    return rows


def estimate(output_dir: Path) -> dict:
    """FINN's estimate-only build of every bundle in export.json (this interpreter must have
    finn-plus), and of the sweep's; writes and returns estimate.json, bundle -> totals or
    the error. One FINN process at a time."""
    rows = _rows(output_dir)
    path = output_dir / ESTIMATE_FILE
    results = json.loads(path.read_text()) if path.exists() else {}
    for row in rows:
        if row["bundle"] in results and "error" not in results[row["bundle"]]:
            continue
        bundle = output_dir / row["bundle"]
        build_dir = output_dir / "finn_builds" / bundle.name
        start = time.monotonic()
        run = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "finn_estimate.py"),
             f"--bundle={bundle}", f"--build_dir={build_dir}"],
            capture_output=True, text=True, check=False)
        summary_path = build_dir / "uniq_tf_estimate_summary.json"
        if not summary_path.exists():
            results[row["bundle"]] = {"error": run.stderr[-2000:]}
        else:
            summary = json.loads(summary_path.read_text())
            compute = [v for k, v in summary["per_layer"].items()
                       if k.split("_")[0] in ("MVAU", "VVAU")]
            results[row["bundle"]] = {
                "LUT": summary["total"]["LUT"], "BRAM_18K": summary["total"]["BRAM_18K"],
                "LUT_compute": sum(v["LUT"] for v in compute),
                "seconds": round(time.monotonic() - start, 1),
                "estimated_fps": summary["performance"].get("estimated_throughput_fps"),
                "all_compute_layers_mapped": not summary["missing_compute_layers"],
                "folding_mismatches": _folding_mismatches(bundle, build_dir),
            }
        print(row["bundle"], json.dumps(results[row["bundle"]])[:300], flush=True)
        _write_json(path, results)
    return results


def _folding_mismatches(bundle: Path, build_dir: Path) -> list[str]:
    """The MVAU/VVAU nodes of FINN's folded model whose (MW, MH, PE, SIMD) differ from the
    descriptor's record of the layer the folding config meant by that node name: FINN names
    them in its own graph order, which the exporter's order must match."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    descriptor = json.loads((bundle / "descriptor.json").read_text())
    expected = {r["finn"]["node"]: r for r in descriptor["layers"] if r["finn"]}
    model = ModelWrapper(str(build_dir / "intermediate_models" / "step_minimize_bit_width.onnx"))
    wrong = []
    for node in model.graph.node:
        if node.name not in expected:
            continue
        op, finn = getCustomOp(node), expected[node.name]["finn"]
        built = tuple(op.get_nodeattr(k) for k in ("MW", "MH", "PE", "SIMD"))
        if built != (finn["MW"], finn["MH"], finn["PE"], finn["SIMD"]):
            wrong.append(f"{node.name}: FINN {built}, {expected[node.name]['name']} "
                         f"{(finn['MW'], finn['MH'], finn['PE'], finn['SIMD'])}")
    return wrong


def table(output_dir: Path) -> str:
    """The markdown table of export.json joined with estimate.json (when there is one)."""
    rows = json.loads((output_dir / EXPORT_FILE).read_text())["rows"]
    finn = _estimates(output_dir)
    lines = ["| model | W | variant | B per layer | Keras acc. | ONNX acc. | max abs diff | "
             "target fps | LUT | BRAM_18K | FINN fps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        est = finn.get(row["bundle"], {})
        cells = [est.get(k) for k in ("LUT", "BRAM_18K", "estimated_fps")]
        lut, bram, fps = ("-" if v is None else f"{v:,.0f}" for v in cells)
        widths = "/".join(str(b) for b in row["grid_bits"].values())
        lines.append(
            f"| {row['model']} | {row['weight_bits']} | {row['variant']} | {widths} | "
            f"{100 * row['keras_accuracy']:.2f} % | {100 * row['onnx_accuracy']:.2f} % | "
            f"{row['max_abs_diff']:.3g} | {row['target_fps']:,.0f} | {lut} | {bram} | {fps} |")
    return "\n".join(lines)


PYNQ_Z1 = {"LUT": 53_200, "BRAM_18K": 280}  # the XC7Z020's capacity
COMMANDS = """\
Commands (from the repository root; outputs in `outputs/bench/fpga/`):

    .venv/bin/python -m bench.fpga export --weight_bits=2,3,4
    .venv/bin/python -m bench.fpga export --models=resnet20
    .venv/bin/python -m bench.fpga sweep
    /work/finn-venv/bin/python -m bench.fpga estimate
    .venv/bin/python -m bench.fpga table --plot=docs/img/fpga_bops_lut.png \\
        --docs=docs/benchmarks.md"""


def _widths(grid_bits: dict[str, int], shortcuts: set[str]) -> str:
    """B of the UNIQ layers ("10 (all 20)" or "5/4/..."), and of the fixed shortcuts."""
    uniq = [b for name, b in grid_bits.items() if name not in shortcuts]
    text = f"{uniq[0]} (all {len(uniq)})" if len(set(uniq)) == 1 else "/".join(map(str, uniq))
    fixed = sorted({grid_bits[name] for name in shortcuts})
    return text + (f"; shortcuts {'/'.join(map(str, fixed))}" if fixed else "")


def resnet_text(output_dir: Path, name: str = "resnet20") -> str:
    """The ResNet-20 part of docs/benchmarks.md section 6 (between its fpga-resnet20 markers):
    its run, the table of its variants at every throughput, the ratios to the default."""
    content = json.loads((output_dir / EXPORT_FILE).read_text())
    runs = [run for run in content.get("runs", [content])
            if any(r["model"] == name for r in run["rows"] + run.get("failed", []))]
    if not runs:
        return f"**{name}**: not exported (`.venv/bin/python -m bench.fpga export " \
               f"--models={name}`)."
    run = runs[-1]
    machine = run["machine"]
    rows = [r for r in run["rows"] if r["model"] == name]
    finn = _estimates(output_dir)
    shortcuts = set()
    for row in rows:
        desc = json.loads((output_dir / row["bundle"] / "descriptor.json").read_text())
        shortcuts |= {r["name"] for r in desc["layers"] if r.get("fixed_weights")}
    lines = [
        f"**ResNet-20 through FINN.** `uniq_tf.models.resnet20` (He et al.'s CIFAR ResNet-20: "
        "16/32/64 filters, option-A shortcuts) on the 8x8 digits (CIFAR-10 is not available "
        f"offline), W{'/'.join(sorted({str(r['weight_bits']) for r in rows}))}A8, with the "
        "demo CNN's schedule and variants (same seed; `uniform` is TFMOT's uniform QAT as "
        f"above). Exported {machine['date']} on a {machine['cores']}-core {machine['cpu']}, "
        f"Python {machine['python']}, TensorFlow {machine['tensorflow']}; FINN estimated as "
        "above (finn-plus 1.6.1, Pynq-Z1, 100 MHz), one build at a time.",
        "",
        "The exporter writes each option-A shortcut (in Keras a 1x1 `AveragePooling2D` with "
        "stride 2, a `Rescaling` by 0 for the new channels and a `Concatenate`) as one 1x1 "
        "stride-2 conv with constant weights [I; 0] (identity on the block's input channels, "
        "zeros for the appended ones) on a 2-bit integer grid: it computes the same values "
        "exactly (tests/test_fpga_export.py) and FINN maps it to an MVAU, where it mapped "
        "neither the plain `AveragePool` nor the `Concat` with zeros. The two shortcuts are "
        f"fixed layers of the descriptor ({', '.join(f'`{n}`' for n in sorted(shortcuts))}: "
        "no codebook, B = 2 in every variant), and count in its MACs and BOPs as in qonnx's. "
        "(The ZeroPadding2D before each strided 3x3 conv is folded into that conv's pads: "
        "FINN 1.6.1's InferFMPadding stops at a standalone opset-11 `Pad`.)",
        "",
    ]
    done = [finn.get(r["bundle"], {}) for r in rows]
    mapped = [e for e in done if "LUT" in e]
    if mapped:
        wrong = [m for e in mapped for m in e.get("folding_mismatches") or []]
        all_mapped = all(e.get("all_compute_layers_mapped") for e in mapped)
        count = len(json.loads((output_dir / rows[0]["bundle"] / "folding_config.json")
                               .read_text())) - 1
        lines += [
            f"{len(mapped)} of {len(rows)} bundles built through FINN's estimate steps; "
            + (f"in every one all {count} compute layers are MVAUs" if all_mapped
               else "NOT all compute layers became MVAUs")
            + (", with the sizes and PE/SIMD the descriptor gives the layer the folding "
               "config names (checked node by node)." if not wrong
               else f"; folding mismatches: {'; '.join(wrong[:5])}."),
            "",
        ]
    lines += [
        "| variant | B per layer (19 convs, fc; shortcuts) | Keras acc. | ONNX acc. | "
        "max abs diff | target fps | LUT | LUT in MVAUs | BRAM_18K | FINN fps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, est in zip(rows, done, strict=True):
        cells = [est.get(k) for k in ("LUT", "LUT_compute", "BRAM_18K", "estimated_fps")]
        lut, compute, bram, fps = ("-" if v is None else f"{v:,.0f}" for v in cells)
        lines.append(
            f"| {row['variant']} | {_widths(row['grid_bits'], shortcuts)} | "
            f"{100 * row['keras_accuracy']:.2f} % | {100 * row['onnx_accuracy']:.2f} % | "
            f"{row['max_abs_diff']:.3g} | {row['target_fps']:,.0f} | {lut} | {compute} | "
            f"{bram} | {fps} |")
    failed = [r for r in run.get("failed", []) if r["model"] == name]
    if failed:
        lines += ["", "Not exported: " + "; ".join(
            f"`{r['variant']}` ({r['error']})" for r in failed) + "."]
    by_key = {(r["variant"], r["target_fps"]): e for r, e in zip(rows, done, strict=True)}
    fps_list = sorted({r["target_fps"] for r in rows})
    if all("LUT" in by_key.get(("default", f), {}) for f in fps_list):
        kinds = _lut_by_kind(output_dir, rows[0]["bundle"])
        rest = {by_key[(v, f)]["LUT"] - by_key[(v, f)]["LUT_compute"]
                for v, f in by_key if "LUT" in by_key[(v, f)]}
        lines += ["", "Against the default export (the data-free B = 10) at the same fps, the "
                  "LUT in the MVAUs and BRAM_18K. The rest of the LUT is "
                  + " to ".join(f"{r:,.0f}" for r in sorted(rest))
                  + " in every bundle, whatever B: "
                  + ", ".join(f"{kind} {lut:,.0f}" for kind, lut in
                              sorted(kinds.items(), key=lambda kv: -kv[1])
                              if lut and kind not in ("MVAU", "VVAU"))
                  + " (the 8-bit activations' thresholds, 255 per channel, are most of it):",
                  "",
                  "| variant | " + " | ".join(f"MVAU LUT, BRAM_18K at {f:,.0f} fps"
                                              for f in fps_list) + " |",
                  "|---|" + "---|" * len(fps_list)]
        for variant in dict.fromkeys(r["variant"] for r in rows):
            cells = []
            for f in fps_list:
                est, ref = by_key.get((variant, f), {}), by_key[("default", f)]
                cells.append(
                    "-" if "LUT" not in est else
                    f"{est['LUT_compute']:,.0f} ({est['LUT_compute'] / ref['LUT_compute']:.2f}x)"
                    f", {est['BRAM_18K']:,.0f} ({est['BRAM_18K'] / ref['BRAM_18K']:.2f}x)")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines += ["", _target_text(rows, by_key, shortcuts, fps_list)]
    over = [(r, e) for r, e in zip(rows, done, strict=True)
            if any(e.get(k, 0) > cap for k, cap in PYNQ_Z1.items())]
    if mapped:
        exact = [r for r in rows if r["variant"] != "auto"]
        agreement = sorted({r["top1_agreement"] for r in exact})
        diffs = sorted({r["max_abs_diff"] for r in exact})
        lines += [
            "",
            f"The max abs diff of the other variants ({diffs[0]:.2g} to {diffs[-1]:.2g}) is "
            "larger than the demo CNN's: float summation order now and then flips an 8-bit "
            "activation's rounding by a step, and 19 quantized activations carry it to the "
            "logits; their top-1 agreement with Keras is "
            + " to ".join(f"{100 * a:.2f} %" for a in agreement[::max(len(agreement) - 1, 1)])
            + " (`auto` is not exact: its widths are chosen on agreement). FINN prices the "
            "residual `ElementwiseAdd`s and the batch-norm "
            "`ElementwiseMul`s its streamlining leaves on the residual path at 0 LUT, so the "
            "totals are lower bounds. The Pynq-Z1's XC7Z020 has 53,200 LUT and 280 BRAM_18K: "
            + ("every bundle fits." if not over else
               ("no bundle fits" if len(over) == len(rows) else
                f"{len(over)} of {len(rows)} bundles do not fit")
               + f" (total LUT {min(e['LUT'] for _, e in over):,.0f} to "
               f"{max(e['LUT'] for _, e in over):,.0f}); a smaller part would need 4-bit "
               "activations (15 thresholds per channel instead of 255) or a larger board."),
        ]
        pairs = [(by_key.get(("grid_b", f), {}), by_key.get(("uniform", f), {})) for f in fps_list]
        if all("LUT" in a and "LUT" in b for a, b in pairs):
            acc = {r["variant"]: r["onnx_accuracy"] for r in rows}
            lines += [
                "",
                "UNIQ trained on the b-bit grid (`grid_b`) against TFMOT's uniform b-bit model: "
                "LUT " + " and ".join(f"{a['LUT'] - b['LUT']:+,.0f}" for a, b in pairs)
                + ", BRAM_18K " + ("equal" if all(a["BRAM_18K"] == b["BRAM_18K"]
                                                  for a, b in pairs) else
                                   " and ".join(f"{a['BRAM_18K'] - b['BRAM_18K']:+,.0f}"
                                                for a, b in pairs))
                + f" at {' and '.join(f'{f:,.0f}' for f in fps_list)} fps, ONNX accuracy "
                f"{100 * acc['grid_b']:.2f} against {100 * acc['uniform']:.2f} % (one test "
                "image is 0.22 points).",
            ]
    return "\n".join(lines)


def _target_text(rows, by_key, shortcuts, fps_list) -> str:
    """Which variants meet the W4A8 target: B <= 5, ONNX accuracy within 0.2 points
    of Keras, BRAM at most 0.6x of the default (B = 10) bundle at every fps."""
    met, missed = [], []
    for row in rows:
        if row["target_fps"] != fps_list[0] or row["variant"] in ("default", "uniform"):
            continue
        widths = max(b for name, b in row["grid_bits"].items() if name not in shortcuts)
        ratios = [by_key[(row["variant"], f)]["BRAM_18K"] / by_key[("default", f)]["BRAM_18K"]
                  for f in fps_list]
        gap = row["onnx_accuracy"] - row["keras_accuracy"]
        why = [f"B up to {widths}"] * (widths > 5) + [
            f"ONNX {100 * gap:+.2f} points against Keras"] * (abs(gap) > 0.002) + [
            f"BRAM {r:.2f}x at {f:,.0f} fps" for r, f in zip(ratios, fps_list, strict=True)
            if r > 0.6]
        (missed if why else met).append(
            f"`{row['variant']}`" + (f" ({', '.join(why)})" if why else ""))
    return ("The W4A8 target (B <= 5, ONNX accuracy within 0.2 points of Keras, BRAM "
            "at most 0.6x of the B = 10 bundle) on ResNet-20, UNIQ variants: met by "
            + (", ".join(met) or "none") + "; not by " + (", ".join(missed) or "none") + ".")


def _lut_by_kind(output_dir: Path, bundle: str) -> dict[str, float]:
    """FINN's LUT estimate of one bundle by node kind (MVAU, Thresholding, ...)."""
    path = output_dir / "finn_builds" / Path(bundle).name / "uniq_tf_estimate_summary.json"
    kinds: dict[str, float] = {}
    for node, values in json.loads(path.read_text())["per_layer"].items():
        kinds[node.split("_")[0]] = kinds.get(node.split("_")[0], 0) + values["LUT"]
    return kinds


def _wrap(text: str, width: int = 95) -> str:
    """Paragraphs filled to ``width`` (tables and indented code left as they are)."""
    import textwrap

    return "\n\n".join(
        block if block.startswith(("|", " ")) else textwrap.fill(
            block, width, break_long_words=False, break_on_hyphens=False)
        for block in text.split("\n\n"))


def write_docs(output_dir: Path, path: Path) -> None:
    """Rewrites the fpga-resnet20 and fpga-commands parts of section 6 of ``path``."""
    from bench import common

    page = path.read_text()
    section = common.section_of(page, "fpga")
    if section is None:
        raise SystemExit(f"{path} has no fpga section")
    for name, text in (("fpga-resnet20", resnet_text(output_dir)), ("fpga-commands", COMMANDS)):
        start, end = common.section_markers(name)
        if start not in section:
            raise SystemExit(f"section 6 of {path} has no {start} ... {end}")
        section = common.splice_section(section, name, f"{start}\n{_wrap(text)}\n{end}\n")
    common.write_text(str(path), common.splice_section(page, "fpga", section))


def _estimates(output_dir: Path) -> dict:
    path = output_dir / ESTIMATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def r_squared(x, y) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the least-squares line y = slope x + intercept."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return float(slope), float(intercept), float(1 - residual.var() / y.var())


def sweep_table(output_dir: Path) -> tuple[str, dict]:
    """The sweep's markdown table and its fits: {(BOPs kind, LUT kind): (slope, icpt, R^2)}."""
    rows = json.loads((output_dir / SWEEP_FILE).read_text())["rows"]
    finn = _estimates(output_dir)
    done = [(r, finn[r["bundle"]]) for r in rows if "LUT" in finn.get(r["bundle"], {})]
    lines = ["| W | A | BOPs (paper) | MACs x W x A | LUT | LUT in MVAUs | BRAM_18K |",
             "|---|---|---|---|---|---|---|"]
    for row, est in sorted(done, key=lambda p: (p[0]["activation_bits"], p[0]["weight_bits"])):
        lines.append(f"| {row['weight_bits']} | {row['activation_bits']} | "
                     f"{row['bops'] / 1e6:.2f} M | {row['bops_simple'] / 1e6:.2f} M | "
                     f"{est['LUT']:,.0f} | {est['LUT_compute']:,.0f} | {est['BRAM_18K']:,.0f} |")
    fits = {}
    if len(done) >= 3:
        for bops in ("bops", "bops_simple"):
            for lut in ("LUT", "LUT_compute"):
                fits[(bops, lut)] = r_squared([r[bops] for r, _ in done],
                                              [e[lut] for _, e in done])
    return "\n".join(lines), fits


def plot_sweep(output_dir: Path, path: Path) -> None:
    """LUT (total and in MVAUs) against the paper's BOPs, one marker per activation width,
    with the least-squares lines and their R^2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = json.loads((output_dir / SWEEP_FILE).read_text())["rows"]
    finn = _estimates(output_dir)
    done = [(r, finn[r["bundle"]]) for r in rows if "LUT" in finn.get(r["bundle"], {})]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    bops = np.array([r["bops"] for r, _ in done]) / 1e6
    for lut, color, label in (("LUT", "tab:blue", "total LUT"),
                              ("LUT_compute", "tab:orange", "LUT in MVAUs")):
        values = np.array([e[lut] for _, e in done])
        for a_bits, marker in ((4, "o"), (8, "s")):
            mask = np.array([r["activation_bits"] == a_bits for r, _ in done])
            ax.scatter(bops[mask], values[mask], color=color, marker=marker,
                       label=f"{label}, A{a_bits}")
        for (row, _), x, y in zip(done, bops, values, strict=True):
            ax.annotate(f"W{row['weight_bits']}", (x, y), fontsize=6, xytext=(2, 2),
                        textcoords="offset points")
        slope, intercept, r2 = r_squared(bops, values)
        xs = np.linspace(0, bops.max() * 1.05, 2)
        ax.plot(xs, slope * xs + intercept, color=color, lw=1, label=f"fit, R$^2$ = {r2:.3f}")
    ax.set_xlabel("BOPs (uniq_tf.summary, paper's count), millions")
    ax.set_ylabel("FINN LUT estimate")
    ax.set_title("small_cnn W2..8 A4/A8, one folding, Pynq-Z1 (FINN estimate)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("export", "sweep", "estimate", "table"))
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/bench/fpga"))
    parser.add_argument("--models", default="small_cnn",
                        help="comma-separated uniq_tf.models names (8x8 digits input)")
    parser.add_argument("--weight_bits", default="4", help="comma-separated b")
    parser.add_argument("--target_fps", default="1000,10000", help="comma-separated")
    parser.add_argument("--sweep_weight_bits", default="2,3,4,5,6,7,8")
    parser.add_argument("--sweep_activation_bits", default="4,8")
    parser.add_argument("--sweep_fps", type=float, default=10000.0)
    parser.add_argument("--plot", type=Path, default=None,
                        help="table: write the sweep's LUT-against-BOPs plot here (PNG)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="table: rewrite the ResNet-20 part and the commands of this "
                             "page's section 6 (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.phase == "export":
        export(output_dir, args.models.split(","),
               [int(b) for b in args.weight_bits.split(",")],
               [float(f) for f in args.target_fps.split(",")])
    elif args.phase == "sweep":
        sweep(output_dir, args.models.split(",")[0],
              [int(b) for b in args.sweep_weight_bits.split(",")],
              [int(b) for b in args.sweep_activation_bits.split(",")], args.sweep_fps)
        return
    elif args.phase == "estimate":
        estimate(output_dir)
    if (output_dir / EXPORT_FILE).exists():
        print(table(output_dir))
    if (output_dir / SWEEP_FILE).exists():
        text, fits = sweep_table(output_dir)
        print(text)
        for (bops, lut), (slope, intercept, r2) in fits.items():
            print(f"{lut} = {slope:.4g} x {bops} + {intercept:.4g}: R^2 = {r2:.4f}")
        if args.plot is not None and fits:
            plot_sweep(output_dir, args.plot)
    if args.phase == "table" and (output_dir / EXPORT_FILE).exists():
        print(resnet_text(output_dir))
        if args.docs is not None:
            write_docs(output_dir, args.docs)


if __name__ == "__main__":
    main()
