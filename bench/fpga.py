"""The hardware section (issue 13): FINN's resource estimates for UNIQ's FPGA bundles.

Run by hand, outside CI, in two environments (FINN's ``finn-plus`` lives in its own venv,
see examples/finn_estimate.py for its setup):

    .venv/bin/python bench/fpga.py export --output_dir=outputs/bench/fpga      # ~1 min / model
    /work/finn-venv/bin/python bench/fpga.py estimate --output_dir=outputs/bench/fpga
    .venv/bin/python bench/fpga.py table --output_dir=outputs/bench/fpga

``export`` (project venv) trains each model once per weight width b on the digits (seed 0,
op determinism): 5 float epochs (Adam 3e-3), then UNIQ W{b}A8 (``quantize_model``'s
defaults), activations calibrated, 2 epochs (Adam 5e-4), then 2 epochs in QUANTIZED mode
(Adam 1e-4), all on the training split less its last ``VALIDATION_SIZE`` images, which are
the validation data of "auto". The last two epochs are the same for every variant (same seed
and data order) but for the grid:

    default     no grid in training; the data-free export rule (smallest B within 1% of
                each codebook's level gap)
    auto        no grid in training; weight_grid_bits="auto": top-1 agreement with Keras
                within 0.5% on the validation images
    grid_b+1    the last two epochs on the (b + 1)-bit grid (uniq_tf.set_grid_bits); the
                default export keeps that grid

it writes one bundle per target throughput and records the widths, the Keras and ONNX test
accuracy (qonnx's executor on the 450 test images) and the weight memory in export.json.
``estimate`` (FINN's venv; no TensorFlow needed) runs examples/finn_estimate.py on every
bundle, one process each, and collects total LUT, BRAM_18K and FINN's estimated throughput in
estimate.json. ``table`` prints the markdown table of both.

Not here yet (issue 13): ResNet-20 on CIFAR-10 (no data set offline; ``--models=resnet20``
trains it on the 8x8 digits instead), the uniform b-bit QAT baseline through the same path,
and the BOPs-against-LUT sweep.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALIDATION_SIZE = 360
AUTO_TOLERANCE = 0.005
DIGITS_INPUT = {"input_bits": 5, "input_scale": 1 / 16}
EXPORT_FILE = "export.json"
ESTIMATE_FILE = "estimate.json"


def _write_json(path: Path, content) -> None:
    """Atomic: a reader never sees half a file (no uniq_tf import: FINN's venv runs this)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)


def _train(name: str, weight_bits: int, x_train, y_train):
    from bench import common
    from uniq_tf import calibrate_activations, models, quantize_model
    from uniq_tf._keras import keras

    common.set_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = getattr(models, name)(input_shape=(8, 8, 1), num_classes=10)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    quantized = quantize_model(model, weight_bits=weight_bits, activation_bits=8)
    calibrate_activations(quantized, [x_train[:512]], verbose=False)
    quantized.compile(keras.optimizers.Adam(5e-4), loss)
    quantized.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return quantized


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
    copy.compile(keras.optimizers.Adam(1e-4),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True))
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
            trained = _train(name, bits, x_train, y_train)
            polished = _polish(trained, None, x_train, y_train)
            models_by_variant = {"default": polished, "auto": polished,
                                 "grid_b+1": _polish(trained, bits + 1, x_train, y_train)}
            for variant, model in models_by_variant.items():
                keras_out = model.predict(x_test, verbose=0)
                for fps in fps_list:
                    bundle = output_dir / "bundles" / f"{name}_w{bits}_{variant}_{fps:g}fps"
                    extra = ({"weight_grid_bits": "auto", "validation_data": x_val,
                              "validation_tolerance": AUTO_TOLERANCE}
                             if variant == "auto" else {})
                    result = fpga_export.export_finn(
                        model, bundle, target_fps=fps, overwrite=True, cost_check=False,
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


def estimate(output_dir: Path) -> dict:
    """FINN's estimate-only build of every bundle in export.json (this interpreter must have
    finn-plus); writes and returns estimate.json, bundle -> totals or the error."""
    rows = json.loads((output_dir / EXPORT_FILE).read_text())["rows"]
    path = output_dir / ESTIMATE_FILE
    results = json.loads(path.read_text()) if path.exists() else {}
    for row in rows:
        if row["bundle"] in results and "error" not in results[row["bundle"]]:
            continue
        bundle = output_dir / row["bundle"]
        build_dir = output_dir / "finn_builds" / bundle.name
        run = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "finn_estimate.py"),
             f"--bundle={bundle}", f"--build_dir={build_dir}"],
            capture_output=True, text=True, check=False)
        summary_path = build_dir / "uniq_tf_estimate_summary.json"
        if not summary_path.exists():
            results[row["bundle"]] = {"error": run.stderr[-2000:]}
        else:
            summary = json.loads(summary_path.read_text())
            results[row["bundle"]] = {
                "LUT": summary["total"]["LUT"], "BRAM_18K": summary["total"]["BRAM_18K"],
                "estimated_fps": summary["performance"].get("estimated_throughput_fps"),
                "all_compute_layers_mapped": not summary["missing_compute_layers"],
            }
        print(row["bundle"], json.dumps(results[row["bundle"]])[:300], flush=True)
        _write_json(path, results)
    return results


def table(output_dir: Path) -> str:
    """The markdown table of export.json joined with estimate.json (when there is one)."""
    rows = json.loads((output_dir / EXPORT_FILE).read_text())["rows"]
    path = output_dir / ESTIMATE_FILE
    finn = json.loads(path.read_text()) if path.exists() else {}
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("export", "estimate", "table"))
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/bench/fpga"))
    parser.add_argument("--models", default="small_cnn",
                        help="comma-separated uniq_tf.models names (8x8 digits input)")
    parser.add_argument("--weight_bits", default="4", help="comma-separated b")
    parser.add_argument("--target_fps", default="1000,10000", help="comma-separated")
    args = parser.parse_args(argv)
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.phase == "export":
        sys.path.insert(0, str(ROOT))
        export(output_dir, args.models.split(","),
               [int(b) for b in args.weight_bits.split(",")],
               [float(f) for f in args.target_fps.split(",")])
    elif args.phase == "estimate":
        estimate(output_dir)
    print(table(output_dir))


if __name__ == "__main__":
    main()
