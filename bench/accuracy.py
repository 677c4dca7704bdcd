"""Accuracy per bit width and per BOP: UNIQ against its peers on the digits data set.

For each model and seed, one float model is trained (the seed fixes its initialization and the
data order); every method then starts from that same float model:

    uniq          UNIQ: k-quantile weights, uniform noise, stage-wise (GradualQuantization)
    uniq_flat     UNIQ without stages: every layer noisy at once, then the final epochs
    kquantile_ste k-quantile weights with a straight-through estimator, no noise (QUANTIZED mode
                  from the first step): the ablation of UNIQ's noise
    uniform_qat   TFMOT LastValueQuantizer (per channel, symmetric) weights
    cluster_density, cluster_kmeans  TFMOT weight clustering, 2^b centroids per kernel
    ptq_kquantile, ptq_uniform       post-training quantization, no fine-tuning

Every method has the same activation quantizer (TFMOT MovingAverageQuantizer at the activation
bits after each ReLU, ranges calibrated on 10 training batches first) and every fine-tuning
method the same number of epochs (UNIQ's schedule length), optimizer and learning rate.
Models are evaluated with every quantizer on (UNIQ: weights QUANTIZED). Run alone:

    .venv/bin/python -m bench.accuracy --quick --output_dir=outputs/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import uniq_tf
from bench import common, peers
from uniq_tf._keras import keras, tf
from uniq_tf.cost import bops
from uniq_tf.schedule.gradual import GradualQuantization
from uniq_tf.util import atomic
from uniq_tf.zoo import data, models

METHODS = {
    "uniq": "UNIQ",
    "uniq_flat": "UNIQ, no stages",
    "kquantile_ste": "k-quantile + STE (no noise)",
    "uniform_qat": "uniform QAT (TFMOT quantizers)",
    "cluster_density": "TFMOT clustering, density init",
    "cluster_kmeans": "TFMOT clustering, k-means++ init",
    "ptq_kquantile": "post-training k-quantile",
    "ptq_uniform": "post-training uniform",
    "staged_ste": "k-quantile + STE in UNIQ's stages (no noise)",
}
DEFAULT_METHODS = tuple(METHODS)[:8]
UNIQ_BUILT = ("uniq", "uniq_flat", "kquantile_ste", "ptq_kquantile", "staged_ste")
FINE_TUNED = ("uniq", "uniq_flat", "kquantile_ste", "uniform_qat", "cluster_density",
              "cluster_kmeans", "staged_ste")
DEFAULT_BITS = ((2, 8), (3, 8), (4, 8), (8, 8), (2, 4), (4, 4))
UNIQ_VARIANTS = ("uniq", "uniq_flat", "staged_ste")  # UNIQ and its ablations, not peers


@dataclasses.dataclass
class Schedule:
    """UNIQ's stage-wise schedule for one model; its length is every method's epoch budget."""

    stages: str | int | list = "layer"
    epochs_per_stage: int = 2
    final_epochs: int = 2

    def callback(self) -> GradualQuantization:
        return GradualQuantization(
            stages=self.stages, epochs_per_stage=self.epochs_per_stage,
            final_epochs=self.final_epochs, verbose=0,
        )


@dataclasses.dataclass
class AccuracyConfig:
    """One benchmark run. ``seeds`` and ``bits`` ((weight bits, activation bits) pairs) are
    given per model name; the full run gives both models 5 seeds and every pair (about an hour
    on 2 cores, most of it ResNet-20, whose staged runs retrace at every stage change)."""

    models: Sequence[str] = ("small_cnn", "resnet20")
    seeds: dict = dataclasses.field(
        default_factory=lambda: {"small_cnn": (0, 1, 2, 3, 4), "resnet20": (0, 1, 2, 3, 4)}
    )
    bits: dict = dataclasses.field(
        default_factory=lambda: {"small_cnn": DEFAULT_BITS, "resnet20": DEFAULT_BITS}
    )
    methods: Sequence[str] = DEFAULT_METHODS
    schedules: dict = dataclasses.field(
        default_factory=lambda: {
            "small_cnn": Schedule("layer", 2, 2), "resnet20": Schedule(4, 2, 2),
        }
    )
    float_epochs: int = 15
    float_learning_rate: float = 3e-3
    learning_rate: float = 3e-4
    lr_schedule: str = "cosine"
    batch_size: int = 64
    augment: bool = True
    calibration_steps: int = 10
    per_channel: bool = False
    distribution: str = "gaussian"
    high_noise: bool = False
    uniform_range: str = "auto"  # "auto" (peers.narrow_range_for), "narrow" or "full"
    max_steps_per_epoch: int = 0
    float_dir: str | None = None


def _datasets(config: AccuracyConfig, seed: int):
    train, info = data.get_dataset(
        "digits", "train", batch_size=config.batch_size, augment=config.augment, seed=seed
    )
    test, _ = data.get_dataset("digits", "test", batch_size=256)
    if config.max_steps_per_epoch:
        train = train.take(config.max_steps_per_epoch)
    return train, test, info


LR_SCHEDULES = ("cosine", "constant", "stage_restarts")


def _rate(learning_rate: float, schedule: str, total_steps: int, period_steps: int):
    """cosine: decay to 0 over the run (uniq-train); constant; stage_restarts: a cosine
    decay restarting every ``period_steps`` (one UNIQ stage), so late stages train at the same
    rates as early ones."""
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, max(total_steps, 1))
    if schedule == "constant":
        return learning_rate
    if schedule == "stage_restarts":
        return keras.optimizers.schedules.CosineDecayRestarts(
            learning_rate, max(period_steps, 1), t_mul=1.0, m_mul=1.0
        )
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


def _compile(model, rate) -> None:
    """Adam at ``rate`` (a number or a schedule), cross-entropy on logits, accuracy."""
    model.compile(
        keras.optimizers.Adam(rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _reset_optimizer(model) -> None:
    """Zeroes the optimizer's step count and slots: a fresh optimizer, without the retrace a
    recompiled model would cost."""
    for variable in model.optimizer.variables:
        variable.assign(tf.zeros_like(variable))


def _evaluate(model, test) -> float:
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def float_model(name: str, seed: int, config: AccuracyConfig):
    """(float model, test accuracy) of ``seed``: trained, or loaded from ``config.float_dir``
    where an earlier process saved it (then saved there after training)."""
    if config.float_dir is None:
        return train_float(name, seed, config)
    path = Path(config.float_dir, f"{name}_seed{seed}")
    if path.with_suffix(".json").exists():
        model = keras.models.load_model(str(path.with_suffix(".h5")), compile=False)
        accuracy = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["accuracy"]
        return model, accuracy
    model, accuracy = train_float(name, seed, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path.with_suffix(".h5")) as temp:
        model.save(temp, save_format="h5")
    common.write_json(str(path.with_suffix(".json")), {"accuracy": accuracy})
    return model, accuracy


def train_float(name: str, seed: int, config: AccuracyConfig):
    """The float model of ``seed`` and its test accuracy."""
    common.set_seed(seed)
    train, test, info = _datasets(config, seed)
    model = models.get_model(name, info.input_shape, info.num_classes)
    total = int(train.cardinality()) * config.float_epochs
    _compile(model, _rate(config.float_learning_rate, "cosine", total, total))
    model.fit(train, epochs=config.float_epochs, verbose=0)
    return model, _evaluate(model, test)


def build(method: str, float_model, weight_bits: int, activation_bits: int,
          config: AccuracyConfig):
    """The model ``method`` fine-tunes (or evaluates), made from a copy of ``float_model``."""
    if method in UNIQ_BUILT:
        return uniq_tf.quantize_model(
            float_model, weight_bits, activation_bits, per_channel=config.per_channel,
            distribution=config.distribution, high_noise=config.high_noise,
        )
    if method in ("uniform_qat", "ptq_uniform"):
        return peers.uniform_qat(
            float_model, weight_bits, activation_bits,
            None if config.uniform_range == "auto" else config.uniform_range == "narrow",
        )
    if method in ("cluster_density", "cluster_kmeans"):
        init = "density" if method == "cluster_density" else "kmeans++"
        return peers.clustered(float_model, weight_bits, activation_bits, init)
    raise ValueError(f"Unknown method {method!r}; allowed: {list(METHODS)}")


def _prepare(method: str, model, train, config: AccuracyConfig) -> None:
    """Each method's starting state, then activation ranges from data.

    The weight ranges of the uniform quantizer come first: until set, its LastValueQuantizer
    quantizes to TFMOT's initial range [-6, 6] at inference, and activation ranges calibrated
    through such weights would be far too narrow.
    """
    if method in ("uniform_qat", "ptq_uniform"):
        peers.set_uniform_ranges(model)
    if method in ("kquantile_ste", "ptq_kquantile"):
        uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
    uniq_tf.calibrate_activations(model, train, steps=config.calibration_steps, verbose=False)


class HardInsteadOfNoise(keras.callbacks.Callback):
    """Listed after GradualQuantization: every layer it made NOISY for the epoch is switched to
    QUANTIZED, so the stage being trained sees the hard k-quantile forward with the identity
    gradient (STE) instead of UNIQ's noise; stages, freezing and epochs stay UNIQ's."""

    def on_epoch_begin(self, epoch, logs=None):
        noisy = [name for name, mode in uniq_tf.weight_modes(self.model).items()
                 if mode == uniq_tf.Mode.NOISY]
        if noisy:
            uniq_tf.set_weight_mode(self.model, uniq_tf.Mode.QUANTIZED, noisy)


def _callbacks(method: str, schedule: Schedule, epochs: int) -> list:
    if method == "uniq":
        return [schedule.callback()]
    if method == "staged_ste":
        return [schedule.callback(), HardInsteadOfNoise()]
    if method == "uniq_flat":
        # One stage holding every layer, noisy for all but the final epochs.
        return [GradualQuantization(
            stages=1, epochs_per_stage=epochs - schedule.final_epochs,
            final_epochs=schedule.final_epochs, verbose=0,
        )]
    return []


def epoch_budget(name: str, float_model, config: AccuracyConfig) -> int:
    """The staged UNIQ schedule's length for this model: every fine-tuning method's budget."""
    qmodel = uniq_tf.quantize_model(float_model, 4, 8)
    return config.schedules[name].callback().total_epochs(qmodel)


def _run_method(method, name, float_models, weight_bits, activation_bits, config, epochs,
                progress) -> list[dict]:
    """Every seed of one (method, bit widths): the model is built and traced once, then each
    seed's starting weights are loaded into it (a built copy's weights), so traced functions
    are reused across seeds."""
    runs = []
    model = None
    schedule = config.schedules[name]
    for seed, float_model in float_models.items():
        start = time.perf_counter()
        common.set_seed(seed)
        train, test, _ = _datasets(config, seed)
        fresh = build(method, float_model, weight_bits, activation_bits, config)
        if model is None:
            model = fresh
            steps = int(train.cardinality())
            _compile(model, _rate(config.learning_rate, config.lr_schedule,
                                  steps * max(epochs, 1), steps * schedule.epochs_per_stage))
        else:
            model.set_weights(fresh.get_weights())
            _reset_optimizer(model)
        del fresh
        _prepare(method, model, train, config)
        if method in FINE_TUNED:
            model.fit(train, epochs=epochs, verbose=0,
                      callbacks=_callbacks(method, schedule, epochs))
        if method in UNIQ_BUILT:
            uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
            uniq_tf.set_activation_mode(model, uniq_tf.ActMode.QUANTIZED)
        accuracy = _evaluate(model, test)
        runs.append({
            "model": name, "method": method, "weight_bits": weight_bits,
            "activation_bits": activation_bits, "seed": seed, "accuracy": accuracy,
            "epochs": epochs if method in FINE_TUNED else 0,
            "seconds": round(time.perf_counter() - start, 2),
        })
        progress(f"{name} {method} W{weight_bits}A{activation_bits} seed {seed}: "
                 f"{accuracy:.4f} ({runs[-1]['seconds']:.0f} s)")
    return runs


def run(config: AccuracyConfig, progress=print, float_cache: dict | None = None) -> dict:
    """Trains, fine-tunes and evaluates everything; returns the results (see ``summarize``).

    ``float_cache``: (model name, seed) -> (float model, accuracy), filled and reused, so that
    several runs (bench/ablation.py) start from the same float models.
    """
    unknown = sorted(set(config.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; allowed: {list(METHODS)}")
    started = time.perf_counter()
    results = {"config": config_dict(config), "float": [], "runs": [], "bops": {}, "epochs": {}}
    for name in config.models:
        float_models = {}
        for seed in config.seeds[name]:
            if float_cache is not None and (name, seed) in float_cache:
                model, accuracy = float_cache[(name, seed)]
            else:
                model, accuracy = float_model(name, seed, config)
                if float_cache is not None:
                    float_cache[(name, seed)] = (model, accuracy)
            float_models[seed] = model
            results["float"].append({"model": name, "seed": seed, "accuracy": accuracy})
            progress(f"{name} float seed {seed}: {accuracy:.4f}")
        reference = next(iter(float_models.values()))
        epochs = epoch_budget(name, reference, config)
        results["epochs"][name] = epochs
        results["bops"][name] = {"float": bops.summary(reference).total_bops}
        for weight_bits, activation_bits in config.bits[name]:
            results["bops"][name][f"W{weight_bits}A{activation_bits}"] = bops.summary(
                reference, weight_bits=weight_bits, activation_bits=activation_bits
            ).total_bops
        for method in config.methods:
            for weight_bits, activation_bits in config.bits[name]:
                results["runs"] += _run_method(
                    method, name, float_models, weight_bits, activation_bits, config, epochs,
                    progress,
                )
                keras.backend.clear_session()
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["summary"] = summarize(results)
    return results


def config_dict(config: AccuracyConfig) -> dict:
    out = dataclasses.asdict(config)
    out["bits"] = {k: [list(b) for b in v] for k, v in config.bits.items()}
    out["seeds"] = {k: list(v) for k, v in config.seeds.items()}
    return out


def summarize(results: dict) -> list[dict]:
    """Mean and standard deviation (in %) per (model, method, bits), with BOPs."""
    groups: dict[tuple, list[float]] = {}
    for run_ in results["runs"]:
        key = (run_["model"], run_["method"], run_["weight_bits"], run_["activation_bits"])
        groups.setdefault(key, []).append(run_["accuracy"])
    out = []
    for (name, method, wb, ab), values in groups.items():
        mean, std = common.mean_std([100 * v for v in values])
        out.append({
            "model": name, "method": method, "weight_bits": wb, "activation_bits": ab,
            "mean": mean, "std": std, "n": len(values),
            "bops": results["bops"][name][f"W{wb}A{ab}"],
        })
    floats: dict[str, list[float]] = {}
    for entry in results["float"]:
        floats.setdefault(entry["model"], []).append(100 * entry["accuracy"])
    for name, values in floats.items():
        mean, std = common.mean_std(values)
        out.append({
            "model": name, "method": "float", "weight_bits": 32, "activation_bits": 32,
            "mean": mean, "std": std, "n": len(values), "bops": results["bops"][name]["float"],
        })
    return out


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    return f"{entry['mean']:.2f} ± {entry['std']:.2f}"


def tables(results: dict) -> str:
    """One markdown table per model: methods x bit widths, mean ± std (%), and a BOPs row."""
    summary = results["summary"]
    text = []
    for name in results["config"]["models"]:
        bits = [tuple(b) for b in results["config"]["bits"][name]]
        rows = {(e["method"], e["weight_bits"], e["activation_bits"]): e
                for e in summary if e["model"] == name}
        float_entry = rows.get(("float", 32, 32))
        header = ["method"] + [f"W{w}A{a}" for w, a in bits]
        body = []
        for method in results["config"]["methods"]:
            cells = [_cell(rows.get((method, w, a))) for w, a in bits]
            best = _best_in_columns(rows, results["config"]["methods"], bits)
            cells = [f"**{c}**" if method in best.get(col, ()) else c
                     for c, col in zip(cells, bits, strict=True)]
            body.append([METHODS[method]] + cells)
        body.append(["BOPs"] + [common.si(results["bops"][name][f"W{w}A{a}"]) for w, a in bits])
        seeds = len(results["config"]["seeds"][name])
        text.append(
            f"**{name}** on digits: test accuracy (%), mean ± standard deviation over {seeds} "
            f"seed{'s' if seeds > 1 else ''}; float {_cell(float_entry)} at "
            f"{common.si(results['bops'][name]['float'])} BOPs; {results['epochs'][name]} "
            "fine-tuning epochs for every fine-tuned method. "
            "Bold: the best mean in each column.\n\n"
            + common.markdown_table(header, body)
        )
    return "\n".join(text)


def _best_in_columns(rows, methods, bits) -> dict:
    """(w, a) -> the methods with the highest mean (ties all count), rounded as printed."""
    best = {}
    for w, a in bits:
        means = {m: round(rows[(m, w, a)]["mean"], 2) for m in methods if (m, w, a) in rows}
        if means:
            top = max(means.values())
            best[(w, a)] = {m for m, v in means.items() if v == top}
    return best


PLOTTED = ("float",) + FINE_TUNED


def plot_points(results: dict, name: str) -> list[dict]:
    """Points for uniq_tf.plot_tradeoff: one series per fine-tuned method and float,
    accuracy in %. The post-training methods stay in the tables: tens of points lower at low
    bits, they would squeeze every other series into a line."""
    points = []
    for entry in results["summary"]:
        if entry["model"] != name or entry["method"] not in PLOTTED:
            continue
        label = "float" if entry["method"] == "float" else METHODS[entry["method"]]
        point = {"method": label, "bops": entry["bops"], "accuracy": entry["mean"],
                 "std": entry["std"]}
        if entry["method"] in ("uniq", "float"):
            point["label"] = (
                "FP32" if entry["method"] == "float"
                else f"W{entry['weight_bits']}A{entry['activation_bits']}"
            )
        points.append(point)
    return points


def plot(results: dict, name: str, path: str) -> str:
    from uniq_tf.cost.plots import plot_tradeoff

    return plot_tradeoff(
        plot_points(results, name), path,
        title=f"{name} on digits: accuracy vs. BOPs", accuracy_label="test accuracy (%)",
    )


FLOAT_GAP = 0.5  # points: UNIQ W4A8 at most this far below float, on the mean
TARGET_WEIGHT_BITS = (2, 3, 4)


def _runs(results: dict, name: str, wb: int, ab: int) -> list[dict]:
    """The runs of model ``name`` at (wb, ab), with the float runs as method "float"."""
    runs = [r for r in results["runs"] if r["model"] == name
            and (r["weight_bits"], r["activation_bits"]) == (wb, ab)]
    return runs + [dict(f, method="float") for f in results["float"] if f["model"] == name]


def targets(results: dict) -> list[dict]:
    """The accuracy targets, each with the measured values and whether it is met; every
    comparison is paired over the seeds (same float model and data order).

    W4A8: UNIQ's mean at most ``FLOAT_GAP`` points below float. At 2, 3 and 4 weight bits (each
    activation width run): no peer's paired 95 % interval lies entirely above UNIQ (no peer
    better beyond the noise). Peers are the methods that are not UNIQ or a UNIQ variant.
    """
    out = []
    for name in results["config"]["models"]:
        bits = sorted({(r["weight_bits"], r["activation_bits"]) for r in results["runs"]
                       if r["model"] == name and r["method"] == "uniq"})
        if (4, 8) in bits:
            diff, half, _ = common.paired(_runs(results, name, 4, 8), "uniq", "float")
            out.append({"model": name,
                        "target": f"UNIQ W4A8 at most {FLOAT_GAP} points below float",
                        "measured": f"UNIQ minus float {diff:+.2f} ± {half:.2f}",
                        "met": diff >= -FLOAT_GAP})
        for wb, ab in bits:
            if wb not in TARGET_WEIGHT_BITS:
                continue
            runs = _runs(results, name, wb, ab)
            peers_ = sorted({r["method"] for r in runs} - {"float"} - set(UNIQ_VARIANTS))
            if not peers_:
                continue
            diffs = {m: common.paired(runs, m, "uniq")[:2] for m in peers_}
            best = max(diffs, key=lambda m: diffs[m][0])
            out.append({
                "model": name,
                "target": f"W{wb}A{ab}: no peer's paired 95 % interval above UNIQ (no ▲)",
                "measured": f"best peer {METHODS[best]} minus UNIQ: "
                            f"{diffs[best][0]:+.2f} ± {diffs[best][1]:.2f} points",
                "met": all(not d - h > 0 for d, h in diffs.values()),
            })
    return out


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, small_cnn, 2 configs")
    parser.add_argument("--output_dir", default="outputs/bench")
    parser.add_argument("--output_name", default="accuracy", help="<name>.json, <name>.md")
    parser.add_argument("--json_only", action="store_true",
                        help="no markdown, no plots, no table printed")
    parser.add_argument("--float_dir", default=None,
                        help="load the float models from here (training and saving the "
                             "missing ones), so that several processes share them")
    parser.add_argument("--float_only", action="store_true",
                        help="only train (and with --float_dir save) the float models")
    parser.add_argument("--models", default=None, help="comma-separated model names")
    parser.add_argument("--methods", default=None, help="comma-separated method keys")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--bits", default=None, help='e.g. "2:8,4:8" (weight:activation)')
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--lr_schedule", choices=LR_SCHEDULES, default=None)
    parser.add_argument("--per_channel", action="store_true")
    parser.add_argument("--distribution", default="gaussian")
    parser.add_argument("--high_noise", action="store_true")
    parser.add_argument("--uniform_range", choices=("auto", "narrow", "full"), default="auto",
                        help="uniform QAT's symmetric range: TFMOT's narrow (2^b - 1 levels), "
                             "full (2^b), or auto (full at 2 bits, narrow above)")
    parser.add_argument("--schedule", default=None,
                        help='UNIQ schedule "stages:epochs_per_stage:final_epochs" for every '
                             'model, e.g. "layer:2:2" or "4:3:2"')
    parser.add_argument("--float_epochs", type=int, default=None)
    return parser.parse_args(argv)


def config_from_args(args) -> AccuracyConfig:
    config = quick_config() if args.quick else AccuracyConfig()
    if args.models:
        config.models = tuple(args.models.split(","))
        # A model the chosen preset does not list takes the preset's first model's settings.
        first = next(iter(config.seeds))
        for field in ("seeds", "bits", "schedules"):
            per_model = getattr(config, field)
            for name in config.models:
                per_model.setdefault(name, per_model[first])
    if args.methods:
        config.methods = tuple(args.methods.split(","))
    if args.float_only:
        config.methods = ()
    config.float_dir = args.float_dir
    if args.seeds:
        config.seeds = {name: tuple(range(args.seeds)) for name in config.models}
    if args.bits:
        pairs = tuple(tuple(int(b) for b in item.split(":")) for item in args.bits.split(","))
        config.bits = {name: pairs for name in config.models}
    if args.learning_rate:
        config.learning_rate = args.learning_rate
    if args.lr_schedule:
        config.lr_schedule = args.lr_schedule
    if args.schedule:
        stages, per_stage, final = args.schedule.split(":")
        stages = stages if stages == "layer" else int(stages)
        config.schedules = {n: Schedule(stages, int(per_stage), int(final)) for n in config.models}
    if args.float_epochs:
        config.float_epochs = args.float_epochs
    config.per_channel = args.per_channel
    config.distribution = args.distribution
    config.high_noise = args.high_noise
    config.uniform_range = args.uniform_range
    return config


def quick_config() -> AccuracyConfig:
    """The quick run (make bench-quick, and CI's benchmark test): small_cnn, 1 seed, W2A8 and
    W4A8, short training."""
    return AccuracyConfig(
        models=("small_cnn",), seeds={"small_cnn": (0,)}, bits={"small_cnn": ((2, 8), (4, 8))},
        schedules={"small_cnn": Schedule(2, 1, 1)}, float_epochs=5,
    )


def merge(parts: Sequence[dict]) -> dict:
    """One result from parts of one configuration run separately (run_all runs each model's
    methods in their own processes): runs concatenated, floats by (model, seed), the methods
    in METHODS order, seconds summed (process time, not wall time)."""
    if not parts:
        raise ValueError("merge needs at least one result")
    merged = {"config": dict(parts[0]["config"]), "float": [], "runs": [], "bops": {},
              "epochs": {}}
    merged["config"]["models"] = list(dict.fromkeys(
        m for part in parts for m in part["config"]["models"]))
    for key in ("bits", "seeds"):
        merged["config"][key] = {k: v for part in parts for k, v in part["config"][key].items()}
    floats = {}
    for part in parts:
        merged["runs"] += part["runs"]
        floats.update({(f["model"], f["seed"]): f for f in part["float"]})
        for key in ("bops", "epochs"):
            merged[key].update(part[key])
    merged["float"] = list(floats.values())
    merged["config"]["methods"] = [m for m in METHODS
                                   if any(m in part["config"]["methods"] for part in parts)]
    merged["seconds"] = sum(part["seconds"] for part in parts)
    merged["summary"] = summarize(merged)
    return merged


def write_outputs(results: dict, output_dir: str, name: str = "accuracy") -> None:
    """<name>.json, <name>.md and one accuracy-vs-BOPs PNG per model."""
    out = Path(output_dir)
    common.write_json(str(out / f"{name}.json"), results)
    common.write_text(str(out / f"{name}.md"), tables(results))
    for model in results["config"]["models"]:
        plot(results, model, str(out / f"accuracy_bops_{model}.png"))


def main(argv=None) -> None:
    args = _parse_args(argv)
    results = run(config_from_args(args))
    if args.json_only:
        common.write_json(str(Path(args.output_dir) / f"{args.output_name}.json"), results)
    else:
        write_outputs(results, args.output_dir, args.output_name)
        print(tables(results))


if __name__ == "__main__":
    main()
