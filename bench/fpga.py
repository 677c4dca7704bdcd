"""The hardware section (issue 13): FINN's resource estimates for UNIQ's FPGA bundles.

Run by hand, outside CI, in two environments (FINN's ``finn-plus`` lives in its own venv,
see examples/finn_estimate.py for its setup):

    .venv/bin/python bench/fpga.py export --weight_bits=2,3,4   # ~1 min / width
    .venv/bin/python bench/fpga.py sweep                        # ~1 min
    /work/finn-venv/bin/python bench/fpga.py estimate           # ~10 s per bundle
    .venv/bin/python bench/fpga.py table --plot=docs/img/fpga_bops_lut.png

(outputs in ``outputs/bench/fpga``). ``export`` (project venv) trains each model once per
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
LUT of the MVAUs, BRAM_18K and FINN's estimated throughput in estimate.json. ``table`` prints
the markdown tables, the least-squares fits of LUT against BOPs with their R^2, and the plot.

Not here (issue 13): ResNet-20 on CIFAR-10 (no data set offline). ``--models=resnet20``
trains it on the 8x8 digits, but FINN 1.6.1 does not map its option-A shortcuts (a 1x1
stride-2 AveragePool and a Concat with zero channels): docs/benchmarks.md section 6.
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
    from uniq_tf import models
    from uniq_tf._keras import keras

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
    from uniq_tf._keras import tf
    from uniq_tf.quantize import QuantizeWrapper

    codebooks, kernels = {}, {}
    for layer in uniform_model.layers:
        if not (isinstance(layer, QuantizeWrapper)
                and isinstance(layer.quantize_config, peers.UniformKernelConfig)):
            continue
        config = layer.quantize_config
        (weight, _, variables), = layer._weight_vars
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
    from uniq_tf import data
    from uniq_tf._keras import tf

    tf.config.experimental.enable_op_determinism()
    x_all, y_all, x_test, y_test = data.load_digits()
    x_train, y_train = x_all[:-VALIDATION_SIZE], y_all[:-VALIDATION_SIZE]
    x_val = x_all[-VALIDATION_SIZE:]
    rows = []
    for name in model_names:
        for bits in weight_bits:
            float_model = _float(name, x_train, y_train)
            trained = _train(float_model, bits, x_train, y_train)
            polished = _polish(trained, None, x_train, y_train)
            uniform = _uniform(float_model, bits, x_train, y_train)
            layout, uniform_codebooks = uniq_layout(uniform, float_model, bits)
            models_by_variant = {
                "default": (polished, polished, {}),
                "auto": (polished, polished, {"validation_data": x_val,
                                              "validation_tolerance": AUTO_TOLERANCE}),
                "grid_b+1": (*[_polish(trained, bits + 1, x_train, y_train)] * 2, {}),
                "grid_b": (*[_polish(trained, max(bits, 2), x_train, y_train)] * 2, {}),
                "uniform": (uniform, layout, {"codebooks": uniform_codebooks}),
            }
            for variant, (model, exported, extra) in models_by_variant.items():
                keras_out = model.predict(x_test, verbose=0)
                for fps in fps_list:
                    bundle = output_dir / "bundles" / f"{name}_w{bits}_{variant}_{fps:g}fps"
                    result = fpga_export.export_finn(
                        exported, bundle, target_fps=fps, overwrite=True, cost_check=False,
                        **DIGITS_INPUT, **extra)
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
    _write_json(output_dir / EXPORT_FILE, {"machine": common.machine(), "rows": rows})
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
    from uniq_tf import data
    from uniq_tf._keras import tf

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
            }
        print(row["bundle"], json.dumps(results[row["bundle"]])[:300], flush=True)
        _write_json(path, results)
    return results


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
    args = parser.parse_args(argv)
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.phase in ("export", "sweep"):
        sys.path.insert(0, str(ROOT))
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


if __name__ == "__main__":
    main()
