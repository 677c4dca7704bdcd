"""``estimate``: FINN's estimate-only build of every bundle (examples/finn_estimate.py, one
process at a time), and the checks of FINN's folded graph; writes estimate.json.

Runs in FINN's own venv, which has neither TensorFlow nor uniq_tf: this module imports neither
(qonnx only inside the functions that read FINN's graph)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.fpga.results import ESTIMATE_FILE, EXPORT_FILE, SWEEP_FILE, write_json
from bench.fpga.settings import progress

ROOT = Path(__file__).resolve().parents[2]  # the repository root


def _rows(output_dir: Path) -> list[dict]:
    rows = []
    for name in (EXPORT_FILE, SWEEP_FILE):
        if (output_dir / name).exists():
            rows += json.loads((output_dir / name).read_text())["rows"]
    return rows


def estimate(output_dir: Path) -> dict:
    """FINN's estimate-only build of every bundle in export.json (this interpreter must have
    finn-plus), and of the sweep's; writes and returns estimate.json, bundle -> totals or
    the error. One FINN process at a time; a bundle estimated since it was last written is
    not built again (its node checks are redone on the build there is)."""
    from importlib.metadata import version

    rows = _rows(output_dir)
    path = output_dir / ESTIMATE_FILE
    results = json.loads(path.read_text()) if path.exists() else {}
    start = time.monotonic()
    for index, row in enumerate(rows, 1):
        bundle = output_dir / row["bundle"]
        written = (bundle / "descriptor.json").stat().st_mtime
        old = results.get(row["bundle"], {})
        if "error" not in old and old.get("descriptor_mtime") == written:
            build = output_dir / "finn_builds" / bundle.name
            if (build / "intermediate_models").exists():  # the node checks, redone (cheap)
                old["folding_mismatches"] = _folding_mismatches(bundle, _finn_model(build))
            continue
        progress(start, f"FINN estimate {index}/{len(rows)}: {row['bundle']}")
        build_dir = output_dir / "finn_builds" / bundle.name
        summary_path = build_dir / "uniq_tf_estimate_summary.json"
        summary_path.unlink(missing_ok=True)
        build_start = time.monotonic()
        run = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "finn_estimate.py"),
             f"--bundle={bundle}", f"--build_dir={build_dir}"],
            capture_output=True, text=True, check=False)
        if not summary_path.exists():
            results[row["bundle"]] = {"error": run.stderr[-2000:], "descriptor_mtime": written}
        else:
            summary = json.loads(summary_path.read_text())
            compute = [v for k, v in summary["per_layer"].items()
                       if k.split("_")[0] in ("MVAU", "VVAU")]
            model = _finn_model(build_dir)
            results[row["bundle"]] = {
                "LUT": summary["total"]["LUT"], "BRAM_18K": summary["total"]["BRAM_18K"],
                "LUT_compute": sum(v["LUT"] for v in compute),
                "LUT_by_kind": by_kind(summary["per_layer"], "LUT"),
                "thresholds_finn": finn_thresholds(model),
                "seconds": round(time.monotonic() - build_start, 1),
                "estimated_fps": summary["performance"].get("estimated_throughput_fps"),
                "all_compute_layers_mapped": not summary["missing_compute_layers"],
                "folding_mismatches": _folding_mismatches(bundle, model),
                "finn_version": version("finn-plus"),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "descriptor_mtime": written,
            }
        print(row["bundle"], json.dumps(results[row["bundle"]])[:300], flush=True)
        write_json(path, results)
    write_json(path, results)
    return results


def by_kind(per_layer: dict, resource: str) -> dict[str, float]:
    """FINN's estimate of ``resource`` summed by node kind (MVAU, Thresholding, ...: a node's
    name up to its first underscore, hls and rtl variants together)."""
    kinds: dict[str, float] = {}
    for node, values in per_layer.items():
        kind = node.split("_")[0]
        kinds[kind] = kinds.get(kind, 0.0) + values[resource]
    return kinds


def _finn_model(build_dir: Path):
    """FINN's folded model of a build (its last intermediate model before the estimates)."""
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(build_dir / "intermediate_models" / "step_minimize_bit_width.onnx"))


def finn_thresholds(model) -> int:
    """The thresholds of FINN's graph: channels x steps of every Thresholding node and of every
    MVAU/VVAU that carries its activation's thresholds (noActivation = 0)."""
    from qonnx.custom_op.registry import getCustomOp

    count = 0
    for node in model.graph.node:
        kind = node.op_type.split("_")[0]
        if kind == "Thresholding":
            channels, tensor = getCustomOp(node).get_nodeattr("NumChannels"), node.input[1]
        elif kind in ("MVAU", "VVAU") and getCustomOp(node).get_nodeattr("noActivation") == 0:
            op = getCustomOp(node)
            channels = op.get_nodeattr("MH" if kind == "MVAU" else "Channels")
            tensor = node.input[2]
        else:
            continue
        count += int(channels) * int(model.get_initializer(tensor).shape[-1])
    return count


def _folding_mismatches(bundle: Path, model) -> list[str]:
    """The MVAU/VVAU nodes of FINN's folded ``model`` whose (MW, MH) differ from the
    descriptor's record of the layer the folding config meant by that node name, or whose
    (PE, SIMD) differ from the folding config's (the sweep gives all its bundles one folding
    config, which then differs from the descriptor's own): FINN names the nodes in its own
    graph order, which the exporter's order must match."""
    from qonnx.custom_op.registry import getCustomOp

    descriptor = json.loads((bundle / "descriptor.json").read_text())
    folding = json.loads((bundle / "folding_config.json").read_text())
    expected = {r["finn"]["node"]: r for r in descriptor["layers"] if r["finn"]}
    wrong = []
    for node in model.graph.node:
        if node.name not in expected:
            continue
        op, finn = getCustomOp(node), expected[node.name]["finn"]
        config = folding.get(node.name, {})
        built = tuple(op.get_nodeattr(k) for k in ("MW", "MH", "PE", "SIMD"))
        wanted = (finn["MW"], finn["MH"], config.get("PE", finn["PE"]),
                  config.get("SIMD", finn["SIMD"]))
        if built != wanted:
            wrong.append(f"{node.name}: FINN {built}, {expected[node.name]['name']} {wanted}")
    return wrong
