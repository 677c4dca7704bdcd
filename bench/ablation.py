"""Where UNIQ stands against its best peers at low bit widths, and which options move it.

Runs bench/accuracy.py's pipeline once per variant of the UNIQ settings (per-channel
statistics, the empirical CDF, high noise, the learning rate, longer stages), every variant
from the same float models, UNIQ and the k-quantile STE ablation with the same settings; and,
under the default settings, UNIQ's stage-wise schedule with the hard k-quantile forward in
place of the noise (what the noise itself does) and TFMOT clustering (k-means++, the
strongest peer). Not part of
``make bench`` (it is an investigation, ~15 min per model); its table is quoted in
bench/findings.md.

    .venv/bin/python -m bench.ablation --models=small_cnn --seeds=5 --bits=2:8,3:8,2:4
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bench import accuracy, common

VARIANTS = {
    "default": {},
    "per_channel": {"per_channel": True},
    "empirical CDF": {"distribution": "empirical"},
    "high noise (+-1/k)": {"high_noise": True},
    "per_channel + high noise": {"per_channel": True, "high_noise": True},
    "learning rate 1e-3": {"learning_rate": 1e-3},
    "2x epochs per stage": {"stage_factor": 2},
}
METHODS = ("uniq", "kquantile_ste")
REFERENCES = ("staged_ste", "cluster_kmeans")


def variant_config(base: accuracy.AccuracyConfig, overrides: dict) -> accuracy.AccuracyConfig:
    overrides = dict(overrides)
    factor = overrides.pop("stage_factor", 1)
    config = dataclasses.replace(base, **overrides)
    config.schedules = {
        name: dataclasses.replace(s, epochs_per_stage=s.epochs_per_stage * factor)
        for name, s in base.schedules.items()
    }
    return config


def run(base: accuracy.AccuracyConfig, variants: list[str], progress=print) -> dict:
    cache: dict = {}
    out = {"config": accuracy.config_dict(base), "variants": {}}
    reference = dataclasses.replace(base, methods=REFERENCES)
    out["reference"] = accuracy.run(reference, progress, cache)
    for name in variants:
        config = variant_config(dataclasses.replace(base, methods=METHODS), VARIANTS[name])
        progress(f"== variant {name}")
        out["variants"][name] = accuracy.run(config, progress, cache)
    return out


def table(results: dict) -> str:
    """Per model: variant rows, UNIQ and STE mean ± std per bit-width pair."""
    text = []
    for model in results["config"]["models"]:
        bits = [tuple(b) for b in results["config"]["bits"][model]]
        header = ["variant"] + [f"{m} W{w}A{a}" for w, a in bits for m in ("UNIQ", "STE")]
        rows = []
        for name, res in results["variants"].items():
            cells = _means(res, model)
            rows.append([name] + [cells.get((m, w, a), "-") for w, a in bits for m in METHODS])
        ref = _means(results["reference"], model)
        for method in REFERENCES:
            rows.append([f"default settings: {accuracy.METHODS[method]}"]
                        + [ref.get((method, w, a), "-") if m == "uniq" else ""
                           for w, a in bits for m in METHODS])
        seeds = len(results["config"]["seeds"][model])
        text.append(f"**{model}**, test accuracy (%), mean ± std over {seeds} seeds\n\n"
                    + common.markdown_table(header, rows))
    return "\n".join(text)


def _means(results: dict, model: str) -> dict:
    return {(e["method"], e["weight_bits"], e["activation_bits"]):
            f"{e['mean']:.2f} ± {e['std']:.2f}"
            for e in results["summary"] if e["model"] == model}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small_cnn")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bits", default="2:8,3:8,2:4")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output_dir", default="outputs/bench")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"Unknown variants {unknown}; allowed: {list(VARIANTS)}")
    models = tuple(args.models.split(","))
    pairs = tuple(tuple(int(b) for b in item.split(":")) for item in args.bits.split(","))
    base = accuracy.AccuracyConfig(
        models=models, seeds={m: tuple(range(args.seeds)) for m in models},
        bits={m: pairs for m in models},
    )
    results = run(base, variants)
    out = Path(args.output_dir)
    common.write_json(str(out / "ablation.json"), results)
    common.write_text(str(out / "ablation.md"), table(results))
    print(table(results))


if __name__ == "__main__":
    main()
