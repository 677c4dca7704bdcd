"""The low-bit suite of the accuracy benchmark: a protocol that can tell the methods apart.

bench/accuracy.py's digits split tests on 450 images (0.22 points each) with models that are
near 99 % at 2 bits. This suite is built to resolve differences between methods at 2-4 bits:

- **Folds and repeats as seeds.** Seed s trains on four folds of a stratified 5-fold split of
  all 1,797 digits and tests on fold s % 5, from its own float model and data order, so every
  five consecutive seeds test every digit exactly once. :data:`SCHEDULE_SEEDS` seeds per
  schedule, :data:`SEED_COUNTS` at W2A8 for UNIQ, its peers and the freezing study
  (:data:`WIDE_METHODS`), where 2-bit differences need the tighter interval. Each test image is
  evaluated at its 9 one-pixel shifts (the shifts training augments with), about 3,240 test
  images per seed: a resolution of 0.03 points. Test cross-entropy is reported beside
  accuracy.
- **Narrow models** (:data:`MODELS`, UNIQ stages :data:`MODEL_STAGES`): float accuracy at
  most 98 % on this test set, and 2-bit post-training k-quantile quantization loses more than
  10 points (measured, in the tables).
- **Paired.** One float model per (model, seed); every method starts from it and sees the
  same data order. For each method, the paired difference to UNIQ's default over the seeds,
  with a 95 % t interval (n - 1 degrees of freedom).
- **Schedules**, each the whole fine-tune of every fine-tuned method (same epochs, same
  optimizer, same rate schedule): ``short`` (Adam, cosine decay to 0, 2 epochs per stage, as
  bench/accuracy.py), ``reference`` (the reference code's recipe scaled down: SGD with
  momentum 0.9 and weight decay, a longer first stage, a constant rate that drops 10x only
  for the final epochs) and ``short1`` (``short`` with one-epoch stages, where the default
  has no polish, against a polish of half an epoch; three methods, :data:`SCHEDULE_METHODS`).
- **The freezing study** (:data:`STUDY_METHODS`, default schedule, 8-bit activations): UNIQ's
  defaults with the earlier stages trained on instead of frozen, and with two more final
  epochs, to see what the straight-through peers gain at 3-4 bits by training every layer.
- **Equal tuning.** Each fine-tuned method gets its learning rate from the same three-value
  sweep per schedule (W2A8, seed 0, on a validation fifth held out of seed 0's training
  folds; best validation accuracy, then cross-entropy).
- **Deterministic.** ``tf.config.experimental.enable_op_determinism`` and seeds on every
  random op: the same command gives the same numbers.

Run alone (one process per model, schedule and method, two at a time):

    .venv/bin/python -m bench.lowbit --output_dir=outputs/bench     # full (hours, 2 cores)
    .venv/bin/python -m bench.lowbit --quick --output_dir=/tmp/lb   # quick (~1 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import uniq_tf
from bench import common, lsq, peers
from uniq_tf._keras import keras, tf
from uniq_tf.cost import bops
from uniq_tf.schedule.gradual import GradualQuantization
from uniq_tf.util import atomic

ROOT = Path(__file__).resolve().parents[1]

METHODS = {
    "uniq": "UNIQ, project defaults (clipped noise; polish in stages of 2+ epochs)",
    "uniq_paper": "UNIQ, the paper (noise clip 1e-5, no polish)",
    "uniq_clipped": "UNIQ, clipped noise, no polish",
    "uniq_bin": "UNIQ, bin-matched noise, no polish",
    "uniq_half": "UNIQ, clipped noise + polish of half an epoch",
    "uniq_nofreeze": "UNIQ, project defaults, earlier stages trained on (no freezing)",
    "uniq_final4": "UNIQ, project defaults, 4 final epochs (2 more than every other method)",
    "kquantile_ste": "k-quantile + STE (no noise)",
    "uniform_qat": "uniform QAT (TFMOT quantizers)",
    "lsq": "LSQ (learned step sizes; Esser et al. 2020)",
    "cluster_kmeans": "TFMOT clustering, k-means++ init",
    "ptq_kquantile": "post-training k-quantile",
    "ptq_uniform": "post-training uniform",
}
# UNIQ variants: the noise model, polish_epochs (None = GradualQuantization's default: the last
# epoch of stages of 2+ epochs, nothing in one-epoch stages), whether earlier stages freeze, and
# final epochs beyond the schedule's (the freezing study: why straight-through peers gain at
# 3-4 bits).
UNIQ_VARIANTS = {
    "uniq": {"noise": "clipped", "polish": None},
    "uniq_paper": {"noise": "paper", "polish": 0},
    "uniq_clipped": {"noise": "clipped", "polish": 0},
    "uniq_bin": {"noise": "bin_matched", "polish": 0},
    "uniq_half": {"noise": "clipped", "polish": 0.5},
    "uniq_nofreeze": {"noise": "clipped", "polish": None, "freeze": False},
    "uniq_final4": {"noise": "clipped", "polish": None, "extra_final": 2},
}
REFERENCE_METHOD = "uniq"
FINE_TUNED = ("uniq", "uniq_paper", "uniq_clipped", "uniq_bin", "uniq_half", "uniq_nofreeze",
              "uniq_final4", "kquantile_ste", "uniform_qat", "lsq", "cluster_kmeans")
POST_TRAINING = ("ptq_kquantile", "ptq_uniform")
BITS = ((2, 8), (2, 4), (3, 8), (4, 8))
# The reference schedule is 1.5x longer; it compares schedules at the two lowest 8-bit pairs.
SCHEDULE_BITS = {"short": BITS, "reference": ((2, 8), (3, 8)), "short1": ((2, 8), (3, 8))}
# One-epoch stages (where the default has no polish): does half an epoch of polish pay off?
SCHEDULE_METHODS = {"short1": ("uniq", "uniq_half", "kquantile_ste")}
# The freezing study runs on the default schedule, at the 8-bit pairs.
STUDY_METHODS = ("uniq_nofreeze", "uniq_final4")
STUDY_BITS = ((2, 8), (3, 8), (4, 8))
MAIN_METHODS = tuple(m for m in METHODS if m != "uniq_half" and m not in STUDY_METHODS)
# Seeds per schedule, and more at W2A8 for UNIQ's defaults, its peers and the freezing study,
# so that their paired intervals resolve 2-bit differences: seed s trains on the folds of
# s % 5 from its own float model and data order (module docstring).
SCHEDULE_SEEDS = {"short": 10, "reference": 10, "short1": 10}
SEED_COUNTS = {"short": {"W2A8": 40}}
WIDE_METHODS = ("uniq", "kquantile_ste", "uniform_qat", "lsq", "cluster_kmeans",
                *STUDY_METHODS)
SEEDS = tuple(range(SCHEDULE_SEEDS["short"]))
FOLDS = 5
SHIFTS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A fine-tune recipe: UNIQ's stages and the optimizer and rate every method shares."""

    name: str
    optimizer: str  # "adam" or "sgd"
    rates: tuple[float, ...]  # the sweep
    epochs_per_stage: int
    first_stage_epochs: int
    final_epochs: int
    rate_shape: str  # "cosine" (to 0 over the run) or "step" (constant, /10 for final epochs)
    weight_decay: float = 0.0

    def epochs(self, stages: int) -> int:
        return self.first_stage_epochs + (stages - 1) * self.epochs_per_stage + self.final_epochs

    def callback(self, polish: int | None, stages: str | int = "layer", freeze: bool = True,
                 extra_final: int = 0) -> GradualQuantization:
        return GradualQuantization(
            stages, epochs_per_stage=self.epochs_per_stage,
            first_stage_epochs=self.first_stage_epochs,
            final_epochs=self.final_epochs + extra_final, polish_epochs=polish, freeze=freeze,
            verbose=0,
        )

    def optimizer_for(self, rate: float, steps_per_epoch: int, epochs: int):
        total = steps_per_epoch * epochs
        if self.rate_shape == "cosine":
            schedule = keras.optimizers.schedules.CosineDecay(rate, total)
        else:
            boundary = steps_per_epoch * (epochs - self.final_epochs)
            schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
                [boundary], [rate, rate / 10])
        if self.optimizer == "adam":
            return keras.optimizers.Adam(schedule)
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=self.weight_decay)


SCHEDULES = {
    "short": Schedule("short", "adam", (1e-4, 3e-4, 1e-3), 2, 2, 2, "cosine"),
    "reference": Schedule("reference", "sgd", (3e-3, 1e-2, 3e-2), 3, 5, 2, "step", 5e-4),
    "short1": Schedule("short1", "adam", (1e-4, 3e-4, 1e-3), 1, 1, 2, "cosine"),
}
QUICK_SCHEDULES = {
    "short": Schedule("short", "adam", (3e-4,), 2, 2, 1, "cosine"),
}


# ---------------------------------------------------------------- data and models


def folds(seed: int, validation: bool = False):
    """(x_train, y_train, x_test, y_test) of fold ``seed``: all 1,797 digits in [0, 1],
    (N, 8, 8, 1). ``validation``: the test part is a stratified fifth of the training folds
    instead (for the learning-rate sweep), and the training part the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = digits.target.astype(np.int32)
    splits = list(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, y))
    train, test = splits[seed % FOLDS]
    if validation:
        inner = StratifiedKFold(FOLDS, shuffle=True, random_state=1).split(x[train], y[train])
        fit, held = next(iter(inner))
        train, test = train[fit], train[held]
    return x[train], y[train], x[test], y[test]


def shifted(images: np.ndarray) -> np.ndarray:
    """Every image at each of the 9 one-pixel shifts (zero fill), shift-major."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = images.shape[1:3]
    return np.concatenate([padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                           for dy, dx in SHIFTS])


def train_dataset(x, y, seed: int, batch_size: int = 64) -> tf.data.Dataset:
    """Shuffled (order fixed by ``seed``) and shifted by up to one pixel, from per-example
    stateless seeds: the same ``seed`` gives the same batches in every run and method."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    ds = ds.enumerate()

    def shift(index, example):
        image, label = example
        padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
        crop = tf.image.stateless_random_crop(padded, tf.shape(image),
                                              seed=tf.stack([tf.cast(seed, tf.int64), index]))
        return crop, label

    return ds.map(shift).batch(batch_size)


def test_dataset(x, y, batch_size: int = 512) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(
        (shifted(x), np.tile(y, len(SHIFTS)))).batch(batch_size)


def tiny_cnn(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """Two narrow convolutions (6 and 12 filters) and a dense classifier: 3 kernel layers."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, (filters, stride) in enumerate(((6, 1), (12, 2)), start=1):
        x = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="fc")(x), name="tiny_cnn")


def narrow_resnet(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """A residual net of width 8-16 (stem, two basic blocks, the second with a projection),
    global pooling: 7 kernel layers."""

    def conv_bn(x, filters, stride, name, relu=True):
        x = keras.layers.Conv2D(filters, 3 if "proj" not in name else 1, stride,
                                padding="same", use_bias=False, name=name)(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input(input_shape)
    x = conv_bn(inputs, 8, 1, "stem")
    for name, filters, stride in (("block1", 8, 1), ("block2", 16, 2)):
        y = conv_bn(x, filters, stride, f"{name}_conv1")
        y = conv_bn(y, filters, 1, f"{name}_conv2", relu=False)
        if stride != 1:
            x = conv_bn(x, filters, stride, f"{name}_proj", relu=False)
        x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="narrow_resnet")


MODELS = {"tiny_cnn": tiny_cnn, "narrow_resnet": narrow_resnet}
# UNIQ's stages per model: one per kernel layer, or blocks of layers (each stage change
# retraces the train function, which dominates a small model's run time).
MODEL_STAGES = {"tiny_cnn": "layer", "narrow_resnet": 3}
FLOAT_EPOCHS = 30


def compile_model(model, optimizer) -> None:
    """Cross-entropy on logits and accuracy: what every run of the suite compiles."""
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def evaluate(model, test) -> dict:
    """Test accuracy and cross-entropy."""
    result = model.evaluate(test, verbose=0, return_dict=True)
    return {"accuracy": float(result["accuracy"]), "cross_entropy": float(result["loss"])}


def train_float(name: str, seed: int, epochs: int, validation: bool = False,
                models: dict = MODELS):
    """The float model ``models[name]`` trained on fold ``seed`` (Adam, cosine from 3e-3)."""
    common.set_seed(seed)
    x, y, xt, yt = folds(seed, validation)
    train = train_dataset(x, y, seed)
    model = models[name]()
    steps = int(np.ceil(len(x) / 64))
    compile_model(model, keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(3e-3, steps * epochs)))
    model.fit(train, epochs=epochs, verbose=0)
    return model, evaluate(model, test_dataset(xt, yt))


def float_model(name: str, seed: int, float_dir: str, epochs: int, validation: bool = False,
                models: dict = MODELS):
    """The float model of (``name``, ``seed``), trained once and saved under ``float_dir``."""
    path = Path(float_dir, f"{name}_seed{seed}{'_val' if validation else ''}")
    if not path.with_suffix(".json").exists():
        model, metrics = train_float(name, seed, epochs, validation, models)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path.with_suffix(".h5")) as temp:
            model.save(temp, save_format="h5")
        common.write_json(str(path.with_suffix(".json")), metrics)
    model = keras.models.load_model(str(path.with_suffix(".h5")), compile=False)
    return model, json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- methods


def build(method: str, model, weight_bits: int, activation_bits: int):
    if method in UNIQ_VARIANTS:
        return uniq_tf.quantize_model(model, weight_bits, activation_bits,
                                      noise=UNIQ_VARIANTS[method]["noise"])
    if method in ("kquantile_ste", "ptq_kquantile"):
        return uniq_tf.quantize_model(model, weight_bits, activation_bits)
    if method in ("uniform_qat", "ptq_uniform"):
        return peers.uniform_qat(model, weight_bits, activation_bits)
    if method == "lsq":
        return lsq.lsq_model(model, weight_bits, activation_bits)  # per tensor, as the paper
    if method == "cluster_kmeans":
        return peers.clustered(model, weight_bits, activation_bits, "kmeans++")
    raise ValueError(f"Unknown method {method!r}; allowed: {list(METHODS)}")


def fine_tune(method: str, model_name: str, float_, seed: int, bits: tuple[int, int],
              schedule: Schedule, rate: float, validation: bool = False) -> dict:
    """One run: ``method`` from ``float_`` at ``bits``, evaluated on the fold's test set."""
    weight_bits, activation_bits = bits
    common.set_seed(seed)
    x, y, xt, yt = folds(seed, validation)
    train = train_dataset(x, y, seed)
    model = build(method, float_, weight_bits, activation_bits)
    if method in ("uniform_qat", "ptq_uniform"):
        peers.set_uniform_ranges(model)
    if method in ("kquantile_ste", "ptq_kquantile"):
        uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
    # Calibration sets only uniq_tf's activation ranges and runs in inference, so LSQ's steps
    # keep their own initialization (weights from the kernel, activations from the first
    # training batch); it still runs for LSQ, which keeps the data order every method sees.
    uniq_tf.calibrate_activations(model, train, steps=10, verbose=False)
    epochs = 0
    if method in FINE_TUNED:
        stages = MODEL_STAGES[model_name]
        variant = UNIQ_VARIANTS.get(method, {})
        extra = variant.get("extra_final", 0)
        epochs = extra + schedule.epochs(len(GradualQuantization(stages).plan(
            uniq_tf.quantize_model(float_, 4, 8))))
        steps = int(np.ceil(len(x) / 64))
        compile_model(model, schedule.optimizer_for(rate, steps, epochs))
        callbacks = ([schedule.callback(variant["polish"], stages, variant.get("freeze", True),
                                        extra)] if method in UNIQ_VARIANTS else [])
        model.fit(train, epochs=epochs, verbose=0, callbacks=callbacks)
    if method in UNIQ_VARIANTS or method in ("kquantile_ste", "ptq_kquantile"):
        uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
        uniq_tf.set_activation_mode(model, uniq_tf.ActMode.QUANTIZED)
    if method not in FINE_TUNED:
        compile_model(model, keras.optimizers.Adam())
    return {"epochs": epochs, **evaluate(model, test_dataset(xt, yt))}


def sweep(method: str, model_name: str, schedule: Schedule, float_dir: str,
          float_epochs: int, progress=print) -> tuple[float, list[dict]]:
    """The learning rate of ``schedule.rates`` with the best validation accuracy (then the
    lower cross-entropy) at W2A8 on seed 0's validation split."""
    if len(schedule.rates) == 1:
        return schedule.rates[0], []
    float_, _ = float_model(model_name, 0, float_dir, float_epochs, validation=True)
    trials = []
    for rate in schedule.rates:
        result = fine_tune(method, model_name, float_, 0, (2, 8), schedule, rate,
                           validation=True)
        trials.append({"rate": rate, **result})
        progress(f"  sweep {model_name} {schedule.name} {method} lr {rate:g}: "
                 f"{100 * result['accuracy']:.2f} %")
        keras.backend.clear_session()
    best = max(trials, key=lambda t: (round(t["accuracy"], 6), -t["cross_entropy"]))
    return best["rate"], trials


@dataclasses.dataclass
class Part:
    """One process's work: every bit width and seed of one (model, schedule, method)."""

    model: str
    schedule: str
    method: str
    seeds: tuple[int, ...] = SEEDS
    bits: tuple[tuple[int, int], ...] = BITS
    float_epochs: int = FLOAT_EPOCHS
    quick: bool = False
    floats_only: bool = False
    seed_counts: dict = dataclasses.field(default_factory=dict)  # "W2A8" -> seeds 0..n-1

    def seeds_for(self, bits: tuple[int, int]) -> tuple[int, ...]:
        count = self.seed_counts.get(f"W{bits[0]}A{bits[1]}")
        return self.seeds if count is None else tuple(range(count))


def run_part(part: Part, float_dir: str, progress=print) -> dict:
    tf.config.experimental.enable_op_determinism()
    warnings.filterwarnings("ignore", message=".*HDF5 file.*")
    if part.floats_only:
        for seed in part.seeds:
            _, metrics = float_model(part.model, seed, float_dir, part.float_epochs)
            progress(f"{part.model} float seed {seed}: {100 * metrics['accuracy']:.2f} %")
        float_model(part.model, 0, float_dir, part.float_epochs, validation=True)
        return {}
    schedules = QUICK_SCHEDULES if part.quick else SCHEDULES
    schedule = schedules[part.schedule]
    rate, trials = (sweep(part.method, part.model, schedule, float_dir, part.float_epochs,
                          progress) if part.method in FINE_TUNED else (None, []))
    runs = []
    for bits in part.bits:
        for seed in part.seeds_for(bits):
            start = time.perf_counter()
            float_, _ = float_model(part.model, seed, float_dir, part.float_epochs)
            result = fine_tune(part.method, part.model, float_, seed, bits, schedule, rate)
            runs.append({"model": part.model, "schedule": part.schedule,
                         "method": part.method, "weight_bits": bits[0],
                         "activation_bits": bits[1], "seed": seed, "rate": rate, **result})
            progress(f"{part.model} {part.schedule} {part.method} W{bits[0]}A{bits[1]} seed "
                     f"{seed}: {100 * result['accuracy']:.2f} % "
                     f"({time.perf_counter() - start:.0f} s)")
            keras.backend.clear_session()
    return {"part": dataclasses.asdict(part), "rate": rate, "sweep": trials, "runs": runs}


# ---------------------------------------------------------------- statistics and tables


def paired(runs: list[dict], method: str, against: str, key: str = "accuracy"):
    """(mean difference, half-width of its 95 % t interval, n) of ``method`` minus
    ``against`` over the seeds both have, in points (x100)."""
    a = {r["seed"]: r[key] for r in runs if r["method"] == method}
    b = {r["seed"]: r[key] for r in runs if r["method"] == against}
    seeds = sorted(set(a) & set(b))
    d = np.array([100 * (a[s] - b[s]) for s in seeds])
    if len(d) < 2:
        return (float(d.mean()) if len(d) else float("nan")), float("nan"), len(d)
    from scipy.stats import t

    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()), half, len(d)


def _groups(results: dict):
    out: dict = {}
    for r in results["runs"]:
        out.setdefault((r["model"], r["schedule"], r["weight_bits"], r["activation_bits"]),
                       []).append(r)
    return out


def summary(results: dict) -> list[dict]:
    """Per (model, schedule, method, bits): mean accuracy and cross-entropy, and the paired
    difference to UNIQ's default with its 95 % interval."""
    out = []
    for (model, schedule, wb, ab), runs in _groups(results).items():
        for method in results["methods"]:
            mine = [r for r in runs if r["method"] == method]
            if not mine:
                continue
            acc = [100 * r["accuracy"] for r in mine]
            diff, half, n = paired(runs, method, results.get("reference", REFERENCE_METHOD))
            out.append({
                "model": model, "schedule": schedule, "method": method, "weight_bits": wb,
                "activation_bits": ab, "mean": float(np.mean(acc)),
                "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                "cross_entropy": float(np.mean([r["cross_entropy"] for r in mine])),
                "diff_to_uniq": diff, "ci_half": half, "n": n,
            })
    return out


TARGET_BITS = ((2, 8), (2, 4), (3, 8), (4, 8))
TARGET_SCHEDULE = "short"  # the project's default fine-tune


def targets(results: dict) -> list[dict]:
    """The suite's target per model and bit width, on the default schedule: UNIQ's defaults at
    or above every fine-tuned peer's mean, or the paired 95 % interval holding 0."""
    reference = results.get("reference", REFERENCE_METHOD)
    out = []
    for model in results["models"]:
        for w, a in TARGET_BITS:
            peers_ = [e for e in results["summary"]
                      if (e["model"], e["schedule"], e["weight_bits"], e["activation_bits"])
                      == (model, TARGET_SCHEDULE, w, a) and e["method"] in FINE_TUNED
                      and e["method"] != reference and not e["method"].startswith("uniq")]
            if not peers_:
                continue
            worst = max(peers_, key=lambda e: e["diff_to_uniq"])
            met = all(e["diff_to_uniq"] <= 0 or e["diff_to_uniq"] - e["ci_half"] <= 0
                      for e in peers_)
            out.append({
                "model": model, "met": met,
                "target": f"UNIQ W{w}A{a} >= every peer's mean, or the paired 95 % interval "
                          "holds 0",
                "measured": f"best peer {METHODS[worst['method']]} minus UNIQ: "
                            f"{worst['diff_to_uniq']:+.2f} ± {worst['ci_half']:.2f} points",
            })
    return out


def _verdict(diff: float, half: float) -> str:
    if np.isnan(half):
        return ""
    if diff - half > 0:
        return " ▲"
    if diff + half < 0:
        return " ▼"
    return ""


def tables(results: dict) -> str:
    """Per model and schedule: mean accuracy (%), cross-entropy and paired difference to
    UNIQ's default with its 95 % interval."""
    rows = {(e["model"], e["schedule"], e["method"], e["weight_bits"], e["activation_bits"]): e
            for e in results["summary"]}
    reference = results.get("reference", REFERENCE_METHOD)
    text = []
    for model in results["models"]:
        floats = [100 * f["accuracy"] for f in results["float"] if f["model"] == model]
        for schedule in results["schedules"]:
            bits = [(w, a) for w, a in results["bits"]
                    if any((model, schedule, m, w, a) in rows for m in results["methods"])]
            header = ["method", "lr"] + [f"W{w}A{a}" for w, a in bits]
            body = []
            for method in results["methods"]:
                cells = []
                for w, a in bits:
                    e = rows.get((model, schedule, method, w, a))
                    if e is None:
                        cells.append("-")
                        continue
                    cell = f"{e['mean']:.2f} ({e['cross_entropy']:.3f})"
                    if method != reference:
                        cell += (f"<br>{e['diff_to_uniq']:+.2f} ± {e['ci_half']:.2f}"
                                 f"{_verdict(e['diff_to_uniq'], e['ci_half'])}")
                    cells.append(cell)
                if all(cell == "-" for cell in cells):
                    continue  # not run on this schedule
                rate = results["rates"].get(f"{model}/{schedule}/{method}")
                body.append([METHODS[method], "-" if rate is None else f"{rate:g}"] + cells)
            epochs = results["epochs"].get(f"{model}/{schedule}", "?")
            text.append(
                f"**{model}, {schedule} schedule** ({epochs} fine-tuning epochs; one test "
                f"image is {resolution(results):.3f} points of a seed's accuracy; float "
                f"{np.mean(floats):.2f} %): mean test accuracy % (cross-entropy); below it, "
                f"the paired difference to *{METHODS[reference]}* in points with its "
                "95 % interval over the seeds (▲ / ▼: the interval excludes 0, the method is "
                "above / below UNIQ).\n\n" + common.markdown_table(header, body))
    return "\n".join(text)


def plot(results: dict, output_dir: str) -> list[str]:
    """Accuracy against BOPs with error bars (standard deviation over seeds), per model and
    schedule, fine-tuned methods and float."""
    paths = []
    for model in results["models"]:
        for schedule in results["schedules"]:
            points = [
                {"method": METHODS[e["method"]], "bops": results["bops"][model][
                    f"W{e['weight_bits']}A{e['activation_bits']}"],
                 "accuracy": e["mean"], "std": e["std"]}
                for e in results["summary"]
                if e["model"] == model and e["schedule"] == schedule
                and e["method"] in FINE_TUNED]
            floats = [100 * f["accuracy"] for f in results["float"] if f["model"] == model]
            points.append({"method": "float", "bops": results["bops"][model]["float"],
                           "accuracy": float(np.mean(floats)),
                           "std": float(np.std(floats, ddof=1)) if len(floats) > 1 else 0.0})
            path = os.path.join(output_dir, f"lowbit_{model}_{schedule}.png")
            uniq_tf.plot_tradeoff(points, path, title=f"{model} ({schedule} schedule), digits "
                                  "5-fold, mean ± std")
            paths.append(path)
    return paths


def resolution(results: dict) -> float:
    """Points per test image of one seed (the smallest step an accuracy can take)."""
    sizes = results["test_images"]
    return 100.0 / min(sizes.values())


def noise_errors(bits_list=(2, 3, 4), n: int = 1_000_000) -> list[dict]:
    """Per noise model and bit width, on standard normal weights (seeded): the noisy tensor's
    mean squared error to w and its std, against the hard quantizer's, and the share of noisy
    weights beyond the outer codebook level."""
    from uniq_tf.method import kquantile

    rows = []
    for bits in bits_list:
        w = tf.random.stateless_normal([1, n], seed=[bits, 0], dtype=tf.float64)
        hard = kquantile.quantize(w, bits).numpy()
        for noise in kquantile.NOISE_MODELS:
            tf.random.set_seed(bits)
            noisy = kquantile.add_noise(w, bits, noise=noise).numpy()
            rows.append({
                "bits": bits, "noise": noise,
                "mse": float(np.mean((noisy - w.numpy()) ** 2)),
                "hard_mse": float(np.mean((hard - w.numpy()) ** 2)),
                "std": float(noisy.std()), "hard_std": float(hard.std()),
                "beyond_outer": float(np.mean((noisy > hard.max() + 1e-9)
                                              | (noisy < hard.min() - 1e-9))),
            })
    return rows


def noise_table(rows: list[dict]) -> str:
    body = [[r["bits"], r["noise"], f"{r['mse']:.3f}", f"{r['hard_mse']:.3f}",
             f"{r['mse'] / r['hard_mse']:.2f}", f"{r['std']:.3f}", f"{r['hard_std']:.3f}",
             f"{100 * r['beyond_outer']:.1f} %"] for r in rows]
    return ("Noise models on standard normal weights (10^6 per width, `noise_errors()` in "
            "bench/lowbit.py): the noisy tensor's mean squared error to the float weights and "
            "its standard deviation, beside the hard quantizer's, and the share of noisy "
            "weights beyond the outer codebook level.\n\n"
            + common.markdown_table(["bits", "noise", "MSE (σ²)", "hard MSE", "ratio",
                                     "std (σ)", "hard std", "beyond outer level"], body))


SECTION_START, SECTION_END = common.section_markers("lowbit")


def section(results: dict, image_dir: str = "img") -> str:
    """The suite's part of docs/benchmarks.md, between markers that :func:`splice` replaces."""
    machine = results["machine"]
    floats = {m: [100 * f["accuracy"] for f in results["float"] if f["model"] == m]
              for m in results["models"]}
    ptq = {e["model"]: e["mean"] for e in results["summary"]
           if e["method"] == "ptq_kquantile" and (e["weight_bits"], e["activation_bits"]) == (2, 8)}
    protocol = [[m, f"{np.mean(v):.2f}", f"{np.mean(v) - ptq[m]:.1f}" if m in ptq else "-"]
                for m, v in floats.items()]
    parts = [
        SECTION_START,
        "## 4. Low-bit suite: paired comparisons at 2-4 bits (`bench/lowbit.py`)\n",
        f"Generated by `{results.get('command', 'bench/lowbit.py')}` on {machine['date']} "
        f"({results.get('seconds', 0) / 60:.0f} min; {machine['cores']} cores, "
        f"{machine['cpu']}; TensorFlow {machine['tensorflow']}, TFMOT {machine['tfmot']}). "
        "Five folds of all 1,797 digits serve as the five seeds (every digit is tested once), "
        "each test image at its 9 one-pixel shifts: one image is "
        f"{resolution(results):.3f} points of a seed's accuracy. Every method of a seed starts "
        "from the same float model and sees the same data order; runs are deterministic "
        "(op determinism, seeded ops: the same command gives the same numbers). Each "
        "fine-tuned method uses the best learning rate of the same three-value sweep per "
        "schedule (W2A8, a validation fifth of seed 0's training folds).\n",
        common.markdown_table(["model", "float accuracy (%)",
                               "points lost by 2-bit post-training k-quantile"], protocol),
        noise_table(results["noise_errors"]),
        tables(results),
        "Accuracy against BOPs, mean ± one standard deviation over the five seeds (fine-tuned "
        "methods and float):\n",
    ]
    parts += [f"![low-bit suite, {m}, {s}]({image_dir}/lowbit_{m}_{s}.png)\n"
              for m in results["models"] for s in results["schedules"]]
    parts.append(SECTION_END)
    return "\n".join(parts) + "\n"


def splice(page: str, text: str) -> str:
    """``page`` with the suite's section replaced (or inserted before the findings)."""
    return common.splice_section(page, "lowbit", text)


def write_docs(results: dict, output_dir: str, docs_dir: str) -> str:
    """Splices the section into ``docs_dir``/benchmarks.md and copies the plots to img/."""
    import shutil

    path = os.path.join(docs_dir, "benchmarks.md")
    page = Path(path).read_text(encoding="utf-8") if os.path.exists(path) else "# Benchmarks\n"
    common.write_text(path, splice(page, section(results)))
    os.makedirs(os.path.join(docs_dir, "img"), exist_ok=True)
    for m in results["models"]:
        for s in results["schedules"]:
            name = f"lowbit_{m}_{s}.png"
            shutil.copyfile(os.path.join(output_dir, name), os.path.join(docs_dir, "img", name))
    return path


# ---------------------------------------------------------------- driver


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one model, 2 seeds, W2A8")
    parser.add_argument("--seeds", type=int, default=0,
                        help="run seeds 0..N-1 everywhere (default: SCHEDULE_SEEDS, SEED_COUNTS)")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", default=None)
    parser.add_argument("--schedules", default=None)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--docs_dir", default="",
                        help="also splice the section into DOCS_DIR/benchmarks.md")
    parser.add_argument("--render_only", action="store_true",
                        help="no runs: tables, plots and docs from OUTPUT_DIR/lowbit.json")
    parser.add_argument("--reference", default=REFERENCE_METHOD,
                        help="the UNIQ method every paired difference is taken against")
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def configuration(args) -> dict:
    if args.quick:
        config = {"models": ["tiny_cnn"], "schedules": ["short"],
                  "methods": ["uniq", "uniq_paper", "kquantile_ste", "lsq", "ptq_kquantile"],
                  "seeds": [0, 1], "bits": [[2, 8]], "float_epochs": 12,
                  "schedule_seeds": {}, "seed_counts": {}}
    else:
        config = {"models": list(MODELS), "schedules": list(SCHEDULES),
                  "methods": list(METHODS), "seeds": list(SEEDS),
                  "bits": [list(b) for b in BITS], "float_epochs": FLOAT_EPOCHS,
                  "schedule_seeds": dict(SCHEDULE_SEEDS), "seed_counts": dict(SEED_COUNTS)}
    for key in ("models", "schedules", "methods"):
        value = getattr(args, key)
        if value:
            config[key] = value.split(",")
    if args.seeds:
        config.update(seeds=list(range(args.seeds)), schedule_seeds={}, seed_counts={})
    return config


def parts_of(config: dict, quick: bool) -> list[Part]:
    """One part per (model, schedule, method) the configuration runs."""
    parts = []
    for model in config["models"]:
        for schedule in config["schedules"]:
            count = config["schedule_seeds"].get(schedule)
            seeds = tuple(config["seeds"]) if count is None else tuple(range(count))
            for method in config["methods"]:
                study = method in STUDY_METHODS and schedule == "short"
                if method not in SCHEDULE_METHODS.get(schedule, MAIN_METHODS) and not study:
                    continue
                bits = tuple(b for b in map(tuple, config["bits"])
                             if b in SCHEDULE_BITS.get(schedule, BITS)
                             and (not study or b in STUDY_BITS))
                counts = config["seed_counts"].get(schedule, {}) if method in WIDE_METHODS else {}
                parts.append(Part(model, schedule, method, seeds, bits, config["float_epochs"],
                                  quick, seed_counts=counts))
    return parts


def all_seeds(parts: list[Part]) -> tuple[int, ...]:
    """Every seed some part runs (the float models to train)."""
    return tuple(sorted({seed for p in parts for bits in p.bits for seed in p.seeds_for(bits)}))


def _part_command(part: Part, parts_dir: str) -> list[str]:
    return [sys.executable, "-m", "bench.lowbit", f"--output_dir={parts_dir}",
            f"--part={json.dumps(dataclasses.asdict(part))}"]


def _done(part: Part, parts_dir: str) -> bool:
    """True if an earlier run (killed, or with other parts) left this part's results: a run
    resumes where it stopped."""
    path = Path(parts_dir, f"{part.model}_{part.schedule}_{part.method}.json")
    return path.exists() and json.loads(path.read_text(encoding="utf-8"))["part"] == (
        json.loads(json.dumps(dataclasses.asdict(part))))


def _pool(commands: list[list[str]], jobs: int) -> None:
    waiting, running = list(commands), []
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    while waiting or running:
        while waiting and len(running) < jobs:
            command = waiting.pop(0)
            print(f"== lowbit part {json.loads(command[-1].split('=', 1)[1])}", flush=True)
            running.append(subprocess.Popen(command, cwd=ROOT, env=env))
        time.sleep(0.5)
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            if process.returncode:
                for other in running:
                    other.terminate()
                raise SystemExit(f"lowbit part failed: {process.args[-1]}")


def main(argv=None) -> dict:
    args = _parse_args(argv)
    output_dir = os.path.abspath(args.output_dir)
    if args.part:
        fields = json.loads(args.part)
        part = Part(**{**fields, "seeds": tuple(fields["seeds"]),
                       "bits": tuple(tuple(b) for b in fields["bits"])})
        result = run_part(part, os.path.join(output_dir, "float_models"),
                          functools.partial(print, flush=True))
        if not part.floats_only:
            common.write_json(os.path.join(
                output_dir, f"{part.model}_{part.schedule}_{part.method}.json"), result)
        return result
    if args.render_only:
        results = json.loads(Path(output_dir, "lowbit.json").read_text(encoding="utf-8"))
        results["reference"] = args.reference
        results["summary"] = summary(results)
        results["noise_errors"] = noise_errors()
        write_outputs(results, output_dir, args.docs_dir)
        return results
    started = time.perf_counter()
    config = configuration(args)
    parts_dir = os.path.join(output_dir, "lowbit_parts")
    parts = parts_of(config, args.quick)
    # Float models first (one process per model), so that parts only load them.
    _pool([_part_command(Part(m, "", "", all_seeds(parts), (),
                              config["float_epochs"], args.quick, floats_only=True), parts_dir)
           for m in config["models"]], args.jobs)
    costly = {"narrow_resnet": 3}
    parts.sort(key=lambda p: -costly.get(p.model, 1) * (p.method in FINE_TUNED))
    _pool([_part_command(p, parts_dir) for p in parts if not _done(p, parts_dir)], args.jobs)
    results = merge(config, parts, parts_dir, args.reference)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["command"] = " ".join(["python -m bench.lowbit"] + [
        a for a in (argv if argv is not None else sys.argv[1:])
        if not a.startswith(("--output_dir", "--docs_dir"))])
    write_outputs(results, output_dir, args.docs_dir)
    return results


def merge(config: dict, parts: list[Part], parts_dir: str,
          reference: str = REFERENCE_METHOD) -> dict:
    loaded = [json.loads(Path(parts_dir, f"{p.model}_{p.schedule}_{p.method}.json").read_text(
        encoding="utf-8")) for p in parts]
    results = {**config, "runs": [r for part in loaded for r in part["runs"]],
               "rates": {f"{p['part']['model']}/{p['part']['schedule']}/{p['part']['method']}":
                         p["rate"] for p in loaded},
               "sweeps": {f"{p['part']['model']}/{p['part']['schedule']}/{p['part']['method']}":
                          p["sweep"] for p in loaded},
               "float": [], "bops": {}, "epochs": {}, "test_images": {},
               "reference": reference, "noise_errors": noise_errors()}
    float_dir = Path(parts_dir, "float_models")
    results["seeds"] = list(all_seeds(parts))
    for model in config["models"]:
        for seed in results["seeds"]:
            metrics = json.loads(Path(float_dir, f"{model}_seed{seed}.json").read_text(
                encoding="utf-8"))
            results["float"].append({"model": model, "seed": seed, **metrics})
            results["test_images"][str(seed)] = len(folds(seed)[3]) * len(SHIFTS)
        reference = MODELS[model]()
        results["bops"][model] = {"float": bops.summary(reference).total_bops} | {
            f"W{w}A{a}": bops.summary(reference, weight_bits=w, activation_bits=a).total_bops
            for w, a in config["bits"]}
        for schedule in config["schedules"]:
            epochs = {r["epochs"] for r in results["runs"]
                      if r["model"] == model and r["schedule"] == schedule and r["epochs"]}
            results["epochs"][f"{model}/{schedule}"] = max(epochs) if epochs else 0
    results["summary"] = summary(results)
    results["machine"] = common.machine()
    return results


def write_outputs(results: dict, output_dir: str, docs_dir: str = "") -> None:
    common.write_json(os.path.join(output_dir, "lowbit.json"), results)
    common.write_text(os.path.join(output_dir, "lowbit.md"), section(results))
    plot(results, output_dir)
    if docs_dir:
        print(f"lowbit: wrote {write_docs(results, output_dir, docs_dir)}")
    print(f"lowbit: {len(results['runs'])} runs; tables in "
          f"{os.path.join(output_dir, 'lowbit.md')}")


if __name__ == "__main__":
    main()
