"""docs/benchmarks.md from the three benchmarks' results (and the hand-written bench/findings.md).

Everything with a number in it is generated from the results of the run; the methods and the
investigations (bench/findings.md) are prose kept beside the code that they describe.
"""

from __future__ import annotations

from pathlib import Path

from bench import accuracy, common, deploy, lowbit_report, train_speed

FINDINGS = Path(__file__).with_name("findings.md")
TRAIN_SPEED_LIMIT = 1.15
INT8_SIZE_LIMIT = 0.27
PACKED_FILE_LIMIT = 1.25  # the whole file at most 25 % above b bits per weight


ACCURACY_METHODS = """\
Data: scikit-learn's digits (1,797 8x8 images; 1,347 train, 450 test, so one test image is
0.22 points), with the project's pipeline (`uniq_tf.data`, random pad-and-crop). For each model
and seed one float model is trained (Adam {float_learning_rate:g}, cosine decay, {float_epochs}
epochs; the seed fixes the initialization and the data order) and every method starts from
that same float model:

- **UNIQ**: `uniq_tf.quantize_model` (k-quantile codebooks, {fit}) and
  `uniq_tf.GradualQuantization` ({schedules}).
- **UNIQ, no stages**: the same with a single stage: every layer noisy at once, then the same
  final epochs.
- **k-quantile + STE**: the same quantized model with every weight quantizer in QUANTIZED
  mode from the first step: hard k-quantile forward, identity gradient, no noise, no stages
  (the ablation of UNIQ's noise and schedule).
- **uniform QAT**: TFMOT's own `LastValueQuantizer` on every kernel (per output channel,
  symmetric, straight-through gradient; `bench/peers.py`), {uniform_levels}.
- **TFMOT clustering**: `tfmot.clustering.keras` `ClusterWeights` on every Conv2D/Dense kernel
  with 2^b centroids per kernel (DENSITY_BASED or KMEANS_PLUS_PLUS initialization), the
  centroids trained. TFMOT's own way to quantize activations after clustering
  (cluster-preserving QAT) is 8-bit only, so the clustered models get the same activation
  quantizers as all others, inserted with the same TFMOT wrapper: activations are quantized,
  not float. (A kernel with no more weights than clusters would stay float, as
  `cluster_weights` leaves it; none does in these runs.)
- **post-training k-quantile / uniform**: the same quantizers set from the float weights
  (then the activation ranges calibrated), no training.

Every method has the same activation quantizer after each ReLU (TFMOT's
`MovingAverageQuantizer` at the activation bits, its range calibrated on {calibration_steps}
training batches by `uniq_tf.calibrate_activations` before fine-tuning) and keeps the model
input, batch norm and biases in float. Every fine-tuned method gets the same number of epochs
(UNIQ's schedule length), Adam {learning_rate:g} with cosine decay and batch {batch_size}.
Accuracy is measured with every quantizer on. BOPs are
`uniq_tf.summary(float_model, weight_bits, activation_bits).total_bops` (the paper's count,
model input at 8 bits), the same for every method at a bit-width pair.
"""


def accuracy_methods(config: dict) -> str:
    """ACCURACY_METHODS filled in from an accuracy run's configuration."""
    schedules = []
    for name in config["models"]:
        s = config["schedules"][name]
        stages = "one stage per kernel layer" if s["stages"] == "layer" else (
            f"{s['stages']} blocks of consecutive kernel layers")
        schedules.append(f"{name}: {stages}, {s['epochs_per_stage']} epochs per stage, then "
                         f"{s['final_epochs']} final epochs with every layer quantized and frozen")
    fit = "Gaussian fit" if config["distribution"] == "gaussian" else "empirical CDF"
    fit += ", per output channel" if config["per_channel"] else ", per tensor"
    uniform_levels = {
        "narrow": "TFMOT's narrow range (2^b - 1 levels)",
        "full": "TFMOT's full range (2^b levels)",
        "auto": "TFMOT's full range (2^b levels) at 2 bits and its narrow range (2^b - 1 "
                "levels, its 8-bit default) above (`bench.peers.narrow_range_for`: the better of "
                "the two at each width when the peer was set up, not remeasured per run)",
    }[config["uniform_range"]]
    fields = {**config, "schedules": "; ".join(schedules), "fit": fit,
              "uniform_levels": uniform_levels}
    return ACCURACY_METHODS.format(**fields)


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def target_rows(results: dict) -> list[list[str]]:
    """[benchmark, target, measured, met] for every target the run can check."""
    rows = []
    if "accuracy" in results:
        for t in accuracy.targets(results["accuracy"]):
            rows.append([f"accuracy, section 1 ({t['model']})", t["target"], t["measured"],
                         _yes(t["met"])])
    if "lowbit" in results:
        for t in lowbit_report.targets(results["lowbit"]):
            rows.append([f"low-bit suite, section 4 ({t['model']})", t["target"],
                         t["measured"], _yes(t["met"])])
    if "train_speed" in results:
        summary = results["train_speed"]["summary"]
        if "uniq" in summary:
            ratio = summary["uniq"]["ratio"]
            tfmot = summary.get("tfmot_qat", {}).get("ratio")
            beside = "" if tfmot is None else f" (TFMOT 8-bit QAT: {tfmot:.2f}x)"
            rows.append(["training cost", f"UNIQ train step <= {TRAIN_SPEED_LIMIT}x float",
                         f"{ratio:.2f}x{beside}", _yes(ratio <= TRAIN_SPEED_LIMIT)])
    if "deploy" in results:
        deployed = results["deploy"]["models"] + results["deploy"].get("size_only", [])
        for entry in deployed:
            size = entry["int8_over_float_tflite"]
            rows.append([f"deployment ({entry['model']})",
                         f"int8 TFLite <= {INT8_SIZE_LIMIT}x float TFLite", f"{size:.3f}x",
                         _yes(size <= INT8_SIZE_LIMIT)])
            if "int8_over_float_latency" in entry:
                latency = entry["int8_over_float_latency"]
                rows.append([f"deployment ({entry['model']})", "int8 faster than float in LiteRT",
                             f"{latency:.2f}x float's latency", _yes(latency < 1.0)])
            ratio = entry["packed_file_ratio"]
            rows.append([
                f"deployment ({entry['model']})",
                f"packed file <= {PACKED_FILE_LIMIT}x b/32 of the float32 weights (every byte: "
                "indices, codebooks, other weights, header)",
                f"{ratio:.3f}x ({entry['packed_file_bytes']:,} bytes; b/32 = "
                f"{entry['b_over_32']:.4f})",
                _yes(ratio <= PACKED_FILE_LIMIT),
            ])
    return rows


def _machine(run_info: dict) -> str:
    m = run_info["machine"]
    load = m.get("load_average")
    load_text = "" if not load else f"; load average at the end {load[0]:.1f} (1 min)"
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['system']}, Python {m['python']}, TensorFlow "
        f"{m['tensorflow']}, tf-keras {m['tf_keras']}, TFMOT {m['tfmot']}, LiteRT "
        f"{m['litert']}{load_text}"
    )


def render(results: dict, run_info: dict, image_dir: str = "img") -> str:
    """The whole benchmarks page as markdown."""
    minutes = run_info["total_seconds"] / 60
    parts = [
        "# Benchmarks\n",
        "<!-- Generated by bench/run_all.py; edit bench/report.py or bench/findings.md. -->\n",
        f"Generated by `{run_info['command']}` ({run_info['mode']} run, {minutes:.1f} min: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in run_info["seconds"].items())
        + f") on {run_info['machine']['date']}.\n",
        f"Machine: {_machine(run_info)}. Timings are ratios within one process, measured "
        "interleaved, because the machine is shared.\n",
        "## Targets\n",
        common.markdown_table(["benchmark", "target", "measured", "met"], target_rows(results)),
    ]
    if "accuracy" in results:
        acc = results["accuracy"]
        parts += [
            "## 1. Accuracy per bit width and per BOP (`bench/accuracy.py`)\n",
            accuracy_methods(acc["config"]),
            accuracy.tables(acc),
        ]
        parts.append("Accuracy against BOPs (`uniq_tf.plot_tradeoff`; fine-tuned methods and "
                     "float, error bars one standard deviation, the Pareto front ringed):\n")
        for name in acc["config"]["models"]:
            parts.append(f"![accuracy vs BOPs, {name}]({image_dir}/accuracy_bops_{name}.png)\n")
    if "train_speed" in results:
        parts += [
            "## 2. Training cost (`bench/train_speed.py`)\n",
            train_speed.table(results["train_speed"]),
        ]
    if "deploy" in results:
        parts += [
            "## 3. Deployment size and speed (`bench/deploy.py`)\n",
            deploy.tables(results["deploy"]),
        ]
    if "lowbit" in results:
        parts.append(lowbit_report.section(results["lowbit"], image_dir))
    if FINDINGS.exists():
        parts.append(FINDINGS.read_text(encoding="utf-8"))
    parts += [
        "## Reproducing\n",
        "```\nmake bench          # the full run: writes outputs/bench/ and this page\n"
        "make bench-quick    # the quick run (< 5 min; CI runs it), outputs/bench/ only\n"
        ".venv/bin/python -m bench.accuracy --models=small_cnn --bits=2:8 --seeds=5 "
        "--per_channel   # one slice\n"
        ".venv/bin/python -m bench.lowbit --output_dir=outputs/bench --docs_dir=docs"
        "   # the low-bit suite alone (section 4)\n```\n",
    ]
    return "\n".join(parts)
