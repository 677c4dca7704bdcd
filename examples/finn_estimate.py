"""Run FINN's estimate-only build on a bundle written by fpga_export.export_finn (by hand).

Needs FINN, which lives in its own virtual environment (not the project's .venv, never CI):

    python3 -m venv finn-venv          # outside the repository
    finn-venv/bin/pip install finn-plus psutil
    finn-venv/bin/python examples/finn_estimate.py --bundle=outputs/fpga/finn_bundle

(Seen with finn-plus 1.6.1: about 6 GB, pip settles on torch 2.12.1 even with a CPU torch
2.13.0 installed first, and finn-plus imports psutil without requiring it.)

It reads the bundle's dataflow_build_config.json (estimate-only steps, its folding and
specialize-layers files), builds into ``<bundle>/finn_build`` (or ``--build_dir``), and prints
FINN's per-layer resource estimates (LUT, BRAM, URAM, DSP) with their totals, the estimated
throughput, and whether every quantized layer of descriptor.json became a FINN compute layer
(MVAU/VVAU) under the node name the folding config uses. Exit status 1 if one did not.

No Vivado here: the builder imports the Vivado simulator binding (finn.xsi) when it loads, so
we install FINN's dummy settings and a stub ``finn.xsi`` module first; the estimate steps never
call it. Only this script's own imports are FINN's; it does not import uniq_tf or TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
# What finn.xsi exports lazily (finn-plus 1.6.1); the estimate steps import but never call them.
XSI_NAMES = ("SimEngine", "locate_glbl", "compile_sim_obj", "get_simkernel_so", "load_sim_obj",
             "reset_rtlsim", "close_rtlsim", "rtlsim_multi_io")
COMPUTE_OPS = ("MVAU", "VVAU")


def _prepare_finn(build_dir: Path) -> None:
    # FINN puts intermediate files under FINN_BUILD_DIR (default: ./FINN_TMP) and reads
    # XILINX_VIVADO's name into its build metadata.
    os.environ["FINN_BUILD_DIR"] = str(build_dir / "tmp")
    os.environ.setdefault("XILINX_VIVADO", "not-installed")
    from finn.util import settings

    settings.initialize_dummy_settings()
    stub = types.ModuleType("finn.xsi")

    def unavailable(*args, **kwargs):
        raise RuntimeError("RTL simulation needs Vivado's XSI, which this machine lacks")

    for name in XSI_NAMES:
        setattr(stub, name, unavailable)
    stub.is_available = stub.ensure_available = lambda: False
    sys.modules["finn.xsi"] = stub


def build(bundle: Path, build_dir: Path) -> Path:
    """Runs the bundle's build config with output_dir = ``build_dir``; returns its report dir."""
    _prepare_finn(build_dir)
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import DataflowBuildConfig

    sys.path.insert(0, str(bundle))
    import finn_steps  # noqa: F401  (registers the bundle's custom build step)

    config = json.loads((bundle / "dataflow_build_config.json").read_text())
    config["output_dir"] = str(build_dir)
    for key in ("folding_config_file", "specialize_layers_config_file"):
        if config.get(key):
            config[key] = str(bundle / config[key])
    cfg = DataflowBuildConfig.from_dict(config)
    if build_dataflow_cfg(str(bundle / "model.onnx"), cfg) != 0:
        raise RuntimeError(f"FINN's build failed; see {build_dir / 'build_dataflow.log'}")
    return build_dir / "report"


def summarize(bundle: Path, report: Path) -> dict:
    """FINN's estimates per layer and in total, and the compute-layer check."""
    layers = json.loads((report / "estimate_layer_resources.json").read_text())
    performance = json.loads((report / "estimate_network_performance.json").read_text())
    descriptor = json.loads((bundle / "descriptor.json").read_text())
    per_layer = {name: {r: float(v.get(r, 0)) for r in RESOURCES}
                 for name, v in layers.items() if name != "total"}
    expected = {row["finn"]["node"]: row["name"] for row in descriptor["layers"] if row["finn"]}
    missing = sorted(f"{node} ({layer})" for node, layer in expected.items()
                     if node not in per_layer)
    return {
        "per_layer": per_layer,
        "total": {r: sum(v[r] for v in per_layer.values()) for r in RESOURCES},
        "compute_layers": {node: expected.get(node) for node in per_layer
                           if node.split("_")[0] in COMPUTE_OPS},
        "missing_compute_layers": missing,
        "performance": performance,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path, help="export_finn's out_dir")
    parser.add_argument("--build_dir", type=Path, default=None,
                        help="FINN's output_dir (default: <bundle>/finn_build)")
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    build_dir = (args.build_dir or bundle / "finn_build").resolve()
    os.makedirs(build_dir, exist_ok=True)
    summary = summarize(bundle, build(bundle, build_dir))
    (build_dir / "uniq_tf_estimate_summary.json").write_text(json.dumps(summary, indent=2))
    width = max(len(n) for n in summary["per_layer"]) + 2
    print(f"{'layer':<{width}}" + "".join(f"{r:>10}" for r in RESOURCES) + "  Keras layer")
    for name, values in summary["per_layer"].items():
        print(f"{name:<{width}}" + "".join(f"{values[r]:>10.0f}" for r in RESOURCES)
              + f"  {summary['compute_layers'].get(name) or ''}")
    print(f"{'total':<{width}}" + "".join(f"{summary['total'][r]:>10.0f}" for r in RESOURCES))
    print("performance:", json.dumps(summary["performance"]))
    if summary["missing_compute_layers"]:
        print("NOT FINN compute layers:", ", ".join(summary["missing_compute_layers"]))
        return 1
    print(f"all {len(summary['compute_layers'])} quantized layers are FINN MVAU/VVAU layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
