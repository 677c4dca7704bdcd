"""The low-bit suite's methods (bench/lowbit.py): UNIQ's variants and its peers, the fine-tune
schedules they share, and one run of a method from a float model.

Every fine-tuned method of a schedule gets the same epochs, optimizer and rate schedule
(:class:`Schedule`) and its learning rate from the same sweep (:func:`sweep`: W2A8, seed 0, on
a validation fifth held out of seed 0's training folds; best validation accuracy, then
cross-entropy).
"""

from __future__ import annotations

import dataclasses

import numpy as np

import uniq_tf
from bench import common, lsq, peers
from bench.lowbit_data import (
    compile_model,
    evaluate,
    float_model,
    folds,
    test_dataset,
    train_dataset,
)
from uniq_tf._keras import keras
from uniq_tf.schedule.gradual import GradualQuantization

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

# UNIQ's stages per model: one per kernel layer, or blocks of layers (each stage change
# retraces the train function, which dominates a small model's run time).
MODEL_STAGES = {"tiny_cnn": "layer", "narrow_resnet": 3}


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
