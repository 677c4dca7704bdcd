"""``export``: every variant of every model and weight width, trained and exported at every
target throughput (project venv); writes export.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.fpga import train
from bench.fpga.results import EXPORT_FILE, write_json
from bench.fpga.settings import AUTO_TOLERANCE, DIGITS_INPUT, VALIDATION_SIZE, progress


def export(output_dir: Path, model_names: list[str], weight_bits: list[int],
           fps_list: list[float]) -> list[dict]:
    """Trains, exports every variant at every throughput; writes and returns export.json."""
    import numpy as np

    import fpga_export
    from bench import common
    from fpga_export import check
    from uniq_tf._keras import tf
    from uniq_tf.zoo import data

    start = time.monotonic()
    tf.config.experimental.enable_op_determinism()
    x_all, y_all, x_test, y_test = data.load_digits()
    x_train, y_train = x_all[:-VALIDATION_SIZE], y_all[:-VALIDATION_SIZE]
    x_val = x_all[-VALIDATION_SIZE:]
    rows, failed = [], []
    for name in model_names:
        for bits in weight_bits:
            progress(start, f"{name} W{bits}: float model (5 epochs)")
            float_model = train.float_model(name, x_train, y_train)
            progress(start, f"{name} W{bits}: UNIQ W{bits}A8 (2 + 2 epochs)")
            trained = train.uniq(float_model, bits, x_train, y_train)
            polished = train.polish(trained, None, x_train, y_train)
            progress(start, f"{name} W{bits}: fine-tunes on the {bits + 1}- and {bits}-bit grids")
            models_by_variant = {
                "default": (polished, polished, {}),
                "auto": (polished, polished, {"validation_data": x_val,
                                              "validation_tolerance": AUTO_TOLERANCE}),
                "grid_b+1": (*[train.polish(trained, bits + 1, x_train, y_train)] * 2, {}),
                "grid_b": (*[train.polish(trained, max(bits, 2), x_train, y_train)] * 2, {}),
            }
            try:
                progress(start, f"{name} W{bits}: uniform {bits}-bit QAT (TFMOT)")
                uniform = train.uniform(float_model, bits, x_train, y_train)
                layout, uniform_codebooks = train.uniq_layout(uniform, float_model, bits)
                models_by_variant["uniform"] = (uniform, layout, {"codebooks": uniform_codebooks})
            except Exception as err:  # noqa: BLE001 (recorded in the table instead)
                failed.append({"model": name, "weight_bits": bits, "variant": "uniform",
                               "error": f"{type(err).__name__}: {err}"[:500]})
                print(json.dumps(failed[-1]), flush=True)
            for variant, (model, exported, extra) in models_by_variant.items():
                keras_out = model.predict(x_test, verbose=0)
                for fps in fps_list:
                    bundle = output_dir / "bundles" / f"{name}_w{bits}_{variant}_{fps:g}fps"
                    progress(start, f"export {bundle.name}")
                    try:
                        result = fpga_export.export_finn(
                            exported, bundle, target_fps=fps, overwrite=True, cost_check=False,
                            check_data=x_val, **DIGITS_INPUT, **extra)
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
                        "check": desc["check"]["status"],
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
                 "target_fps": fps_list, "seconds": round(time.monotonic() - start, 1),
                 "images": {"train": len(x_train), "validation": len(x_val),
                            "test": len(x_test)},
                 "input": DIGITS_INPUT, "rows": rows, "failed": failed})
    write_json(path, {"runs": runs, "rows": [r for run in runs for r in run["rows"]]})
    return rows
