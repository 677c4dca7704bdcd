"""``sweep``: BOPs against logic, post-training UNIQ W{b}A{a} models exported with one folding
per model (project venv), and the threshold count T of a model; writes sweep.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.fpga import train
from bench.fpga.results import SWEEP_FILE, write_json
from bench.fpga.settings import DIGITS_INPUT, VALIDATION_SIZE, progress


def activation_thresholds(model, input_bits: int | None = None) -> list[tuple[str, int, int]]:
    """(name, channels, bits) of every activation quantizer of a ``uniq_tf.quantize_model``
    model, the quantizers FINN turns into thresholds (channels x (2^bits - 1) of them), led by
    the model input's quantizer ("input") when its width ``input_bits`` is given: FINN makes
    that one a Thresholding node too."""
    import uniq_tf

    found = [("input", int(model.input_shape[-1]), int(input_bits))] if input_bits else []
    for layer, (_, _, bits) in uniq_tf.inspect_quantized(model).activation_ranges.items():
        found.append((layer, int(model.get_layer(layer).output_shape[-1]), int(bits)))
    return found


def threshold_count(quantizers) -> int:
    """T = sum over activation quantizers of channels x (2^bits - 1): the thresholds an
    exact b-bit quantizer of each channel needs. ``quantizers``: (name, channels, bits)."""
    return sum(channels * (2**bits - 1) for _, channels, bits in quantizers)


def sweep(output_dir: Path, names: list[str], weight_bits: list[int],
          activation_bits: list[int], fps: float) -> list[dict]:
    """BOPs against logic: for each model, post-training UNIQ W{b}A{a} of its float model (no
    fine-tune: accuracy is not the point), weights snapped to the b-bit grid (B = b,
    ``uniq_tf.set_grid_bits``), exported with one folding for all points of the model: the one
    export_finn picks for ``fps`` at (max b, max a), valid for every narrower grid. Writes
    sweep.json (rows of models not run here stay) with the BOPs ``uniq_tf.summary`` reports
    (paper and MACs x b_w x b_a, model input at 5 bits) and the threshold count T."""
    import warnings

    import fpga_export
    import uniq_tf
    from bench import common
    from uniq_tf._keras import tf
    from uniq_tf.zoo import data

    start = time.monotonic()
    tf.config.experimental.enable_op_determinism()
    x_all, y_all, _, _ = data.load_digits()
    x_train, y_train = x_all[:-VALIDATION_SIZE], y_all[:-VALIDATION_SIZE]
    x_val = x_all[-VALIDATION_SIZE:]
    path = output_dir / SWEEP_FILE
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = old.get("runs", [old] if old else [])
    all_rows = []
    for name in names:
        model_start = time.monotonic()
        progress(start, f"sweep {name}: float model (5 epochs)")
        float_model = train.float_model(name, x_train, y_train)
        rows, reference = [], None
        points = [(w, a) for a in sorted(activation_bits, reverse=True)
                  for w in sorted(weight_bits, reverse=True)]
        for index, (w_bits, a_bits) in enumerate(points, 1):
            progress(start, f"sweep {name} W{w_bits}A{a_bits} ({index}/{len(points)})")
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
                                                 cost_check=False, check_data=x_val,
                                                 **DIGITS_INPUT)
            folding_path = bundle / "folding_config.json"
            if reference is None:
                reference = json.loads(folding_path.read_text())
            write_json(folding_path, reference)
            report = uniq_tf.summary(model, input_bits=DIGITS_INPUT["input_bits"])
            quantizers = activation_thresholds(model, DIGITS_INPUT["input_bits"])
            rows.append({
                "model": name, "weight_bits": w_bits, "activation_bits": a_bits,
                "grid_bits": sorted({r["weight_grid_bits"] for r in result.descriptor["layers"]}),
                "bundle": str(bundle.relative_to(output_dir)),
                "bops": report.total_bops, "bops_simple": report.total_bops_simple,
                "macs": report.total_macs, "thresholds": threshold_count(quantizers),
                "activation_quantizers": len(quantizers) - 1,
                "check": result.descriptor["check"]["status"],
            })
            print(json.dumps(rows[-1]), flush=True)
        for run in runs:  # an earlier sweep of this model gives way to this one
            run["rows"] = [r for r in run["rows"] if r["model"] != name]
        runs = [run for run in runs if run["rows"]]
        runs.append({"machine": common.machine(), "model": name, "target_fps": fps,
                     "weight_bits": weight_bits, "activation_bits": activation_bits,
                     "folding": reference, "seconds": round(time.monotonic() - model_start, 1),
                     "rows": rows})
        all_rows += rows
        write_json(path, {"runs": runs, "rows": [r for run in runs for r in run["rows"]]})
    return all_rows
