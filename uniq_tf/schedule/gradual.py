"""UNIQ's gradual (stage-wise) quantization as a Keras callback (docs/method.md).

The quantized kernel layers, in forward order, are split into stages. With ``w`` warm-up epochs,
``e1`` epochs in the first stage and ``e`` in each later one, epoch ``t`` is in stage

    s(t) = -1                      if t < w            (warm-up: everything float)
           0                       if t - w < e1
           1 + (t - w - e1) // e   if that is < n      (stage s trains with noise)
           n                       otherwise           (all quantized, final fine-tuning)

and at stage s a layer of stage i is

    i < s:   weights QUANTIZED (codebook) and frozen; activations QUANTIZED
    i == s:  weights NOISY (trained with UNIQ noise);  activations QUANTIZED
    i > s:   weights FLOAT (trained);                  activations FLOAT

``polish_epochs = p > 0`` is a departure from the paper (docs/method.md, "Schedule options
beyond the paper"): in the last p epochs of each stage its layers are QUANTIZED (hard codebook,
straight-through gradient) instead of NOISY, so each layer is trained against the weights it
keeps before it freezes. p may be fractional: the polish then starts inside an epoch, at the
batch where the last p epochs begin (a mode assignment from ``on_train_batch_begin``, no
retrace). The default (None) polishes the last epoch of every stage that has two or more,
which docs/benchmarks.md (section 4) measured as a gain, and nothing in one-epoch stages (half
an epoch there was not a measured gain); ``p = 0`` is the paper's schedule.

An activation quantizer belongs to the stage of its ``config.owner`` kernel layer (owner None:
quantized from stage 0 on). Stage is a pure function of the epoch, applied in every
``on_epoch_begin``, so a run resumed by ``BackupAndRestore`` or ``initial_epoch`` continues at the
right stage. Modes are tf.Variables: changing them does not retrace the train function.

What it does to your optimizer. While ``fit`` runs, the callback wraps
``model.optimizer.apply_gradients`` so that the kernels of earlier stages stay frozen: each
step, a frozen kernel and its optimizer slots are put back to their values before the update
(no gradient step, no momentum, no weight decay). The wrapper is removed when ``fit`` ends;
:mod:`uniq_tf.schedule.freezing` says how, and why ``trainable`` cannot do it. Only the
quantized kernels freeze; biases and batch norm keep training, and they are what the
``final_epochs`` fine-tune.

Layers are named as the float model names them: a split SeparableConv2D (both halves) is one
layer of the schedule (:mod:`uniq_tf.integration.names`).
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence

from tensorflow.core.framework import summary_pb2

from uniq_tf._keras import keras, require_keras2_model, tf
from uniq_tf.integration.inspection import (
    float_kernel,
    kernel_wrappers,
    output_quantizers,
    weight_quantizers,
    wrappers,
)
from uniq_tf.integration.names import float_name, kernel_layer_names
from uniq_tf.method.quantizers import ActMode, Mode
from uniq_tf.schedule import freezing
from uniq_tf.util import checks

STAGE_LOG_KEY = "uniq_stage"
# The schedule's defaults, which uniq-train and the README use too: one-epoch stages get no
# polish, and at 2 bits they were the one setting where the straight-through ablation beat
# UNIQ (docs/benchmarks.md, section 4).
DEFAULT_EPOCHS_PER_STAGE = 2
DEFAULT_FINAL_EPOCHS = 2


def _check_count(value, name: str, minimum: int) -> int:
    return checks.check_int(value, name, minimum)


def _check_polish(value) -> float:
    if not checks.is_number(value) or not value >= 0:
        raise ValueError(f"polish_epochs must be a number >= 0 or None, got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def _check_stages(stages):
    if isinstance(stages, str):
        if stages != "layer":
            raise ValueError(
                f'stages must be "layer", a positive int or a list of lists of layer names; '
                f"got {stages!r}"
            )
        return stages
    if checks.is_integer(stages):
        return _check_count(stages, "stages (number of stages)", 1)
    if not isinstance(stages, Sequence) or not stages:
        raise ValueError(
            f'stages must be "layer", a positive int or a non-empty list of lists of layer '
            f"names; got {stages!r}"
        )
    checked = []
    for i, stage in enumerate(stages):
        if isinstance(stage, str) or not isinstance(stage, Sequence) or not stage:
            raise ValueError(
                f"stages[{i}] must be a non-empty list of layer names, got {stage!r} "
                '(write [["conv1"], ["conv2", "dense"]], not ["conv1", ...])'
            )
        if not all(isinstance(name, str) for name in stage):
            raise ValueError(f"stages[{i}] must hold layer names (str), got {stage!r}")
        checked.append(list(stage))
    return checked


class GradualQuantization(keras.callbacks.Callback):
    """Quantizes a UNIQ model stage by stage during ``fit`` (see the module docstring).

    Args:
        stages: "layer" (one kernel layer per stage, the reference code's default), an int N
            (N contiguous blocks of near-equal size, in forward order), or explicit lists of
            kernel layer names, as the float model names them (any order; every quantized
            kernel layer must be in exactly one stage, otherwise ``plan`` raises: a layer left
            out would stay float for good).
        warmup_epochs: float epochs before stage 0.
        epochs_per_stage: epochs spent in each stage (>= 1).
        first_stage_epochs: epochs of the first stage (None: ``epochs_per_stage``); the
            reference code trains its first stage longer.
        polish_epochs: the last epochs of each stage (a number, fractions allowed) trained
            with the hard codebook and a straight-through gradient instead of the noise; less
            than every stage's length. None (default): 1 in stages of two or more epochs, 0
            in one-epoch stages.
            0: the paper (see the module doc).
        final_epochs: epochs after the last stage, everything quantized and frozen, biases and
            batch norm fine-tuned.
        freeze: keep the kernels of earlier stages frozen (the paper). False trains them on
            with their hard codebook and a straight-through gradient, as the straight-through
            peers train every layer (docs/benchmarks.md, section 4, measures both).
        verbose: 1 prints a line at each stage change; 0 is silent.
        log_dir: if given, the stage is also written as TensorBoard scalar ``uniq_stage`` under
            ``log_dir/uniq`` (no tensorboard package needed to write it). The ``uniq_stage``
            entry added to the epoch logs always reaches ``History``, and reaches
            ``keras.callbacks.TensorBoard`` (as ``epoch_uniq_stage``) when this callback is
            listed before it.
    """

    def __init__(
        self,
        stages: str | int | Sequence[Sequence[str]] = "layer",
        *,
        warmup_epochs: int = 0,
        epochs_per_stage: int = DEFAULT_EPOCHS_PER_STAGE,
        final_epochs: int = DEFAULT_FINAL_EPOCHS,
        first_stage_epochs: int | None = None,
        polish_epochs: float | None = None,
        freeze: bool = True,
        verbose: int = 1,
        log_dir: str | os.PathLike | None = None,
    ):
        super().__init__()
        self.stages = _check_stages(stages)
        self.warmup_epochs = _check_count(warmup_epochs, "warmup_epochs", 0)
        self.epochs_per_stage = _check_count(epochs_per_stage, "epochs_per_stage", 1)
        self.first_stage_epochs = (
            self.epochs_per_stage if first_stage_epochs is None
            else _check_count(first_stage_epochs, "first_stage_epochs", 1)
        )
        self.polish_epochs = None if polish_epochs is None else _check_polish(polish_epochs)
        shortest = min(self.epochs_per_stage, self.first_stage_epochs)
        if self.polish_epochs is not None and self.polish_epochs >= shortest:
            raise ValueError(
                f"polish_epochs ({self.polish_epochs}) must be less than every stage's length "
                f"(epochs_per_stage {self.epochs_per_stage}, first_stage_epochs "
                f"{self.first_stage_epochs}), so that each stage has noisy epochs"
            )
        self.final_epochs = _check_count(final_epochs, "final_epochs", 0)
        self.freeze = checks.check_bool(freeze, "freeze")
        self.verbose = int(verbose)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._plan: list[list[str]] | None = None
        self._n_stages = (
            len(self.stages)
            if isinstance(self.stages, list)
            else (self.stages if isinstance(self.stages, int) else None)
        )
        self._shown_stage: int | None = None
        self._epoch = 0
        self._polish_from_batch: int | None = None
        # The batch hook reads no logs: spare Keras converting them to numpy every step.
        self._supports_tf_logs = True
        self._frozen = freezing.FrozenKernels()
        self._installed_function = None
        self._writer = None

    # ------------------------------------------------------------------ schedule

    def plan(self, model) -> list[list[str]]:
        """The stages of ``model``: lists of quantized kernel layer names. Also fixes the
        number of stages that :meth:`stage_at` uses."""
        stages = self._split(require_keras2_model(model))
        self._n_stages = len(stages)
        return stages

    def _split(self, model) -> list[list[str]]:
        names = kernel_layer_names(model)
        primary = [w.layer.name for w in kernel_wrappers(model) if float_name(w) == w.layer.name]
        if not names:
            raise ValueError(
                f"Model {model.name!r} has no UNIQ-quantized kernel layer; "
                "call uniq_tf.quantize_model first."
            )
        repeated = sorted({n for n in primary if primary.count(n) > 1})
        if repeated:
            raise ValueError(
                f"Quantized layer names {repeated} occur more than once (nested models); "
                "stages are given by name, so rename the layers."
            )
        if self.stages == "layer":
            return [[n] for n in names]
        if isinstance(self.stages, int):
            if self.stages > len(names):
                raise ValueError(
                    f"stages={self.stages} is more than the {len(names)} quantized kernel "
                    f"layers of model {model.name!r}: {names}"
                )
            size, extra = divmod(len(names), self.stages)
            bounds = [i * size + min(i, extra) for i in range(self.stages + 1)]
            return [names[a:b] for a, b in itertools.pairwise(bounds)]
        return self._check_explicit_plan(self.stages, names, model.name)

    @staticmethod
    def _check_explicit_plan(stages, names, model_name) -> list[list[str]]:
        listed = [n for stage in stages for n in stage]
        unknown = [n for n in listed if n not in names]
        if unknown:
            raise ValueError(
                f"stages name {unknown}, which are not quantized kernel layers of model "
                f"{model_name!r} (activation quantizers follow their kernel layer). "
                f"Quantized kernel layers: {names}"
            )
        repeated = sorted({n for n in listed if listed.count(n) > 1})
        if repeated:
            raise ValueError(f"Layers {repeated} appear in more than one stage (or twice).")
        missing = [n for n in names if n not in listed]
        if missing:
            raise ValueError(
                f"stages leave out the quantized kernel layers {missing}; every quantized "
                "kernel layer must be in a stage (to keep a layer float, pass it to "
                "quantize_model's skip_layers)."
            )
        return [list(stage) for stage in stages]

    def total_epochs(self, model) -> int:
        """warmup + first_stage_epochs + (n_stages - 1) * epochs_per_stage + final_epochs."""
        n = len(self.plan(model))
        return (self.warmup_epochs + self.first_stage_epochs
                + (n - 1) * self.epochs_per_stage + self.final_epochs)

    def stage_at(self, epoch: int) -> int:
        """-1 in warm-up, s in 0..n-1 during stage s, n after the last stage (0-based epochs)."""
        return self._stage_position(epoch)[0]

    def _stage_position(self, epoch: int) -> tuple[int, int, int]:
        """(stage, epochs left in it after this one, its length); 0, 0 outside stages."""
        if self._n_stages is None:
            raise RuntimeError(
                'With stages="layer" the number of stages depends on the model: call '
                "plan(model) first (fit does it in on_train_begin)."
            )
        epoch = _check_count(epoch, "epoch", 0)
        if epoch < self.warmup_epochs:
            return -1, 0, 0
        t = epoch - self.warmup_epochs
        if t < self.first_stage_epochs:
            return 0, self.first_stage_epochs - 1 - t, self.first_stage_epochs
        stage, offset = divmod(t - self.first_stage_epochs, self.epochs_per_stage)
        if stage + 1 >= self._n_stages:
            return self._n_stages, 0, 0
        return stage + 1, self.epochs_per_stage - 1 - offset, self.epochs_per_stage

    def polish_epochs_of(self, length: int) -> float:
        """The polished epochs of a stage of ``length`` epochs (None: 1 if length >= 2)."""
        if self.polish_epochs is None:
            return min(1, length - 1)
        return self.polish_epochs

    def polishing_at(self, epoch: int) -> bool:
        """True when all of ``epoch`` is in its stage's polish (hard, not noisy)."""
        stage, left, length = self._stage_position(epoch)
        return 0 <= stage < self._n_stages and left + 1 <= self.polish_epochs_of(length)

    def polish_start(self, epoch: int) -> float | None:
        """The fraction of ``epoch`` after which the polish starts, where it starts inside
        the epoch (a fractional ``polish_epochs``); None otherwise."""
        stage, left, length = self._stage_position(epoch)
        if not 0 <= stage < self._n_stages:
            return None
        start = left + 1 - self.polish_epochs_of(length)  # epochs of this one before it
        return start if 0 < start < 1 else None

    # ------------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs=None):
        self._plan = self.plan(self.model)
        self._shown_stage = None
        self._installed_function = None
        self._frozen.add([(f"{w.layer.name}_{attr}", float_kernel(w, attr))
                          for w in kernel_wrappers(self.model)
                          for attr, _, _ in weight_quantizers(w)],
                         self.model.distribute_strategy)
        self._frozen.install(self.model.optimizer)
        needed = self.total_epochs(self.model)
        planned = (self.params or {}).get("epochs")
        if planned is not None and planned < needed:
            warnings.warn(
                f"GradualQuantization needs {needed} epochs ({self.warmup_epochs} warm-up + "
                f"{self.first_stage_epochs} + {self._n_stages - 1} stages x "
                f"{self.epochs_per_stage} + {self.final_epochs} final), but fit runs "
                f"{planned}: training ends in stage {self.stage_at(planned - 1)} of "
                f"{self._n_stages}.",
                stacklevel=2,
            )
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "uniq"))

    def on_epoch_begin(self, epoch, logs=None):
        stage = self.stage_at(epoch)
        polishing = self.polishing_at(epoch)
        self._apply_stage(self.model, stage, polishing)
        self._epoch = epoch
        self._polish_from_batch = self._polish_start_batch(epoch)
        shown = (stage, polishing)
        if self.verbose and shown != self._shown_stage:
            print(f"GradualQuantization, epoch {epoch + 1}: {self._describe(stage, polishing)}",
                  flush=True)
        self._shown_stage = shown
        self._rebuild_train_function_if_needed()

    def on_train_batch_begin(self, batch, logs=None):
        if self._polish_from_batch is not None and batch == self._polish_from_batch:
            self._set_current_stage_mode(Mode.QUANTIZED)

    def _polish_start_batch(self, epoch: int) -> int | None:
        """The batch of ``epoch`` from which its stage trains hard (None where the polish
        does not start inside this epoch, or the epoch's length is unknown)."""
        start = self.polish_start(epoch)
        steps = (self.params or {}).get("steps")
        if start is None or not steps:
            return None
        return min(int(start * steps), steps - 1)

    def _set_current_stage_mode(self, mode: Mode) -> None:
        stage = self.stage_at(self._epoch)
        names = set(self._plan[stage])
        for wrapper in kernel_wrappers(self.model):
            if float_name(wrapper) in names:
                for _, _, variables in weight_quantizers(wrapper):
                    variables["mode"].assign(int(mode))

    def on_epoch_end(self, epoch, logs=None):
        stage = self.stage_at(epoch)
        if logs is not None:
            logs[STAGE_LOG_KEY] = float(stage)
        if self._writer is not None:
            with self._writer.as_default():
                _write_scalar(STAGE_LOG_KEY, stage, step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        freezing.remove(self.model.optimizer)
        self._frozen.freeze(set())
        # The traced function holds the freezing; the next fit traces its own (without this
        # callback: plain training).
        if self._installed_function is not None and (
            self.model.train_function is self._installed_function
        ):
            self.model.train_function = None
        self._installed_function = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ applying a stage

    def _apply_stage(self, model, stage: int, polishing: bool = False) -> None:
        """Sets every quantizer's mode for ``stage`` and the set of frozen kernels; while
        ``polishing``, the stage's own layers are QUANTIZED instead of NOISY."""
        stage_of = {name: i for i, names in enumerate(self._plan) for name in names}
        current = Mode.QUANTIZED if polishing else Mode.NOISY
        frozen = set()
        for wrapper in kernel_wrappers(model):
            i = stage_of[float_name(wrapper)]
            mode = Mode.QUANTIZED if i < stage else current if i == stage else Mode.FLOAT
            for attr, _, variables in weight_quantizers(wrapper):
                variables["mode"].assign(int(mode))
                if i < stage and self.freeze:
                    frozen.add(float_kernel(wrapper, attr).ref())
        for wrapper in wrappers(model):
            owner = getattr(wrapper.quantize_config, "owner", None)
            act_mode = ActMode.QUANTIZED if stage_of.get(owner, 0) <= stage else ActMode.FLOAT
            for _, variables in output_quantizers(wrapper):
                variables["act_mode"].assign(int(act_mode))
        self._frozen.freeze(frozen)

    def _describe(self, stage: int, polishing: bool = False) -> str:
        """One line saying which layers are quantized+frozen, noisy and float at ``stage``."""
        plan = self._plan
        n = len(plan)
        if stage < 0:
            return "warm-up, all layers float"
        if stage >= n:
            if not self.freeze:
                return f"all {n} stages quantized; fine-tuning with the hard codebooks"
            return f"all {n} stages quantized and frozen; fine-tuning biases and batch norm"
        done = [name for names in plan[:stage] for name in names]
        later = [name for names in plan[stage + 1 :] for name in names]
        current = "hard (straight-through polish)" if polishing else "noisy"
        return (
            f"stage {stage + 1}/{n}: quantized{'+frozen' if self.freeze else ''} {done or '-'}, "
            f"{current} {plan[stage]}, "
            f"float {later or '-'}"
        )

    def _rebuild_train_function_if_needed(self) -> None:
        """Replaces the train function at the first epoch of a fit when it is not the one
        made for this fit: an earlier fit may have traced it without this callback's
        freezing. Stage changes do not retrace."""
        if self.model.train_function is self._installed_function:
            return
        # An untraced function costs nothing to replace.
        self._installed_function = self.model.make_train_function(force=True)


def _write_scalar(tag: str, value: float, step: int) -> None:
    """What tf.summary.scalar writes (the event TensorBoard's scalars plugin reads), without
    needing the tensorboard package, which TensorFlow 2.21 no longer installs."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata)


__all__ = ["DEFAULT_EPOCHS_PER_STAGE", "DEFAULT_FINAL_EPOCHS", "GradualQuantization",
           "STAGE_LOG_KEY"]
