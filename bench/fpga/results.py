"""The result files of bench.fpga (export.json, sweep.json, estimate.json, and each bundle's own
JSON files): written atomically, read back for ``table``. No TensorFlow: FINN's venv imports
this."""

from __future__ import annotations

import json
from pathlib import Path

EXPORT_FILE = "export.json"
ESTIMATE_FILE = "estimate.json"
SWEEP_FILE = "sweep.json"


def write_json(path: Path, content) -> None:
    """Atomic: a reader never sees half a file (no uniq_tf import: FINN's venv runs this)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)


def load(output_dir: Path) -> dict:
    """What ``table`` reads: export.json, sweep.json (None when missing) and estimate.json."""
    def read(name):
        path = output_dir / name
        return json.loads(path.read_text()) if path.exists() else None

    return {"export": read(EXPORT_FILE), "sweep": read(SWEEP_FILE),
            "finn": read(ESTIMATE_FILE) or {}}


def runs_of(content: dict | None) -> list[dict]:
    """The runs of export.json or sweep.json (a file of the older one-run layout is one run)."""
    if not content:
        return []
    return content.get("runs", [content])


def with_estimates(rows: list[dict], finn: dict) -> list[tuple[dict, dict]]:
    """(row, FINN's estimate) of the rows FINN estimated."""
    return [(r, finn[r["bundle"]]) for r in rows if "LUT" in finn.get(r["bundle"], {})]


def read_bundle_json(output_dir: Path | None, bundle: str, name: str) -> dict | None:
    """The JSON file ``name`` of ``bundle`` (a path under ``output_dir``); None when missing."""
    if output_dir is None or not (output_dir / bundle / name).exists():
        return None
    return json.loads((output_dir / bundle / name).read_text())


def sweep_points(data: dict) -> list[dict]:
    """The sweep's rows FINN estimated, each with its LUT (total, MVAUs, Thresholding nodes),
    BRAM, FINN's threshold count and fps."""
    points = []
    rows = [r for run in runs_of(data["sweep"]) for r in run["rows"]]
    for row, est in with_estimates(rows, data["finn"]):
        kinds = est.get("LUT_by_kind") or {}
        points.append({**row, "LUT": est["LUT"], "LUT_compute": est["LUT_compute"],
                       "LUT_thresholding": kinds.get("Thresholding"),
                       "BRAM_18K": est["BRAM_18K"], "estimated_fps": est.get("estimated_fps"),
                       "thresholds_finn": est.get("thresholds_finn")})
    return points
