"""What lets a killed run resume: the settings check, the :class:`Workspace` (where each
process reads and writes), the per-epoch log, the best quantized model and the backups.

Every file is written atomically (:mod:`uniq_tf.atomic`); a killed process's temporary files are
removed when the next run starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings

import uniq_tf
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import output_quantizers, weight_quantizers, wrappers
from uniq_tf.schedule.gradual import GradualQuantization
from uniq_tf.training.config import TrainConfig, parse_layer_bits, parse_names, parse_stages
from uniq_tf.util import atomic

# Fields that may change between a killed run and its restart: they do not change the training.
RESUMABLE_CHANGES = ("output_dir", "strategy", "verbose")
BACKUP = "backup"


def check_resumable(config: TrainConfig) -> None:
    """A backup left in output_dir by a killed run must come from the same settings, or the
    restart would continue someone else's training."""
    path = os.path.join(config.output_dir, BACKUP, "run.json")
    if not os.path.isfile(path):
        return
    saved = load_json(path)["config"]
    ours = _resume_key(config)
    changed = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} then, {ours.get(k)!r} now" for k in changed)
        raise ValueError(
            f"output_dir {config.output_dir!r} holds the backup of an interrupted run with "
            f"other settings ({diffs}). Run the same command to resume it, or delete "
            f"{os.path.join(config.output_dir, BACKUP)!r} (or pick another output_dir) to start "
            "over."
        )


def _resume_key(config: TrainConfig) -> dict:
    """The settings a restart must repeat, normalised (stages="2" is stages=2) as JSON."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_CHANGES}
    fields.update(stages=parse_stages(config.stages),
                  layer_bits=parse_layer_bits(config.layer_bits),
                  skip_layers=parse_names(config.skip_layers))
    return json.loads(json.dumps(fields))


def save_model(model: keras.Model, path: str) -> None:
    with atomic.atomic_path(path) as temp, warnings.catch_warnings():
        # HDF5 on purpose: the .keras format cannot load TFMOT-quantized models (TFMOT #1123).
        warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save")
        model.save(temp, save_format="h5")


def load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@dataclasses.dataclass(frozen=True)
class Workspace:
    """Where a process of the run reads and writes.

    output_dir holds the results and, under ``backup/``, the state of an unfinished run.
    ``write_dir`` is output_dir for the chief (every single-process run) and a private
    ``output_dir/workertemp_<task id>`` for the other workers of a multi-worker run, deleted at
    the end: every worker saves, only the chief's files are kept (TensorFlow's multi-worker
    recipe). Only the chief writes the run's state; every worker reads it (a shared folder).
    Workers must take the same decisions from it (skip the float phase, save a model: saving
    reads batch norm's sync-on-read statistics, an all-reduce over the workers). They do, since
    every worker reads a state file before the next step that needs all workers, and the chief
    writes it only after that step.
    """

    output_dir: str
    write_dir: str
    is_chief: bool
    role: str

    @classmethod
    def for_strategy(cls, output_dir: str, strategy: tf.distribute.Strategy) -> Workspace:
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is None or not resolver.task_type:
            return cls(output_dir, output_dir, True, "chief")
        role = f"{resolver.task_type} {resolver.task_id}"
        if strategy.extended.should_checkpoint:
            return cls(output_dir, output_dir, True,
                       role if resolver.task_type == "chief" else f"{role} (chief)")
        return cls(output_dir, os.path.join(output_dir, f"workertemp_{resolver.task_id}"),
                   False, role)

    def out(self, name: str) -> str:
        """Where this process writes the output ``name``."""
        return os.path.join(self.write_dir, name)

    def final(self, name: str) -> str:
        """Where the kept output ``name`` is (the chief's)."""
        return os.path.join(self.output_dir, name)

    @property
    def backup_dir(self) -> str:
        return os.path.join(self.output_dir, BACKUP)

    def state(self, name: str) -> str:
        """A file or folder of the unfinished run's state."""
        return os.path.join(self.backup_dir, name)

    def start(self, config: TrainConfig) -> None:
        """Creates the folders, removes what a killed process left half-written, and records
        the settings of the run (checked by :func:`check_resumable` at a restart)."""
        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)  # a killed worker's leftovers
            os.makedirs(self.write_dir)
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        for folder in (self.output_dir, self.backup_dir):
            for name in os.listdir(folder):
                if atomic.TEMP_NAME.fullmatch(name):
                    os.remove(os.path.join(folder, name))
        if not os.path.exists(self.state("run.json")):
            atomic.write_json(self.state("run.json"), {"config": _resume_key(config)})

    def finish(self) -> None:
        """The run is complete: its state (the backups) and any worker temp folder go."""
        shutil.rmtree(self.backup_dir if self.is_chief else self.write_dir, ignore_errors=True)


class EpochLog(keras.callbacks.Callback):
    """The per-epoch logs of one phase, kept in a JSON file that outlives a killed process.

    After a restart, BackupAndRestore resumes ``fit`` at the epoch after its last backup and
    Keras' History holds only the new process's epochs; this log holds them all. It is written
    at every epoch end before the backup (list it before BackupAndRestore), so it is at most
    one epoch ahead of the backup; when a resumed fit starts at epoch t it keeps its first t
    epochs, since the epochs after the backup are trained again.
    """

    def __init__(self, path: str, phase: str, write: bool, verbose: int):
        super().__init__()
        self.path, self.phase, self.write, self.verbose = path, phase, write, verbose
        self.history: dict[str, list[float]] = load_json(path) if os.path.isfile(path) else {}
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            return
        self._started = True
        self.history = {key: values[:epoch] for key, values in self.history.items()}
        if epoch and self.verbose:
            print(f"{self.phase}: resuming at epoch {epoch + 1}/{self.params['epochs']} from "
                  f"the backup in {os.path.dirname(self.path)}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.write:
            atomic.write_json(self.path, self.history)

    def on_train_end(self, logs=None):
        if not self._started and self.verbose and self.history:
            print(f"{self.phase}: all {self.params['epochs']} epochs were done before the "
                  "restart", flush=True)


def _mode_variables(model) -> list:
    return [
        *(v["mode"] for w in wrappers(model) for _, _, v in weight_quantizers(w)),
        *(v["act_mode"] for w in wrappers(model) for _, v in output_quantizers(w)),
    ]


class BestQuantizedModel(keras.callbacks.Callback):
    """Saves the model of the best epoch by validation accuracy, atomically, with every
    quantizer in QUANTIZED mode (as quantized_model.h5).

    Only epochs in which the whole model is evaluated quantized compete: from the last stage
    on (at stage s < n-1 the later stages' layers are evaluated in float, which is not the
    model being kept). The best so far is read from the phase's :class:`EpochLog`, so a
    restarted run keeps comparing against the epochs before the kill. List it after
    BackupAndRestore: a saved epoch then always has its backup, and when the process died
    between the two, the restored state is that epoch's, saved again at the restart.
    """

    def __init__(self, path: str, state_path: str, schedule: GradualQuantization,
                 log: EpochLog, write_state: bool, monitor: str = "val_accuracy"):
        super().__init__()
        self.path, self.state_path, self.schedule, self.log = path, state_path, schedule, log
        self.write_state, self.monitor = write_state, monitor
        self.best: dict | None = None
        self._last_stage = 0
        self._synced = False

    def _competes(self, epoch: int) -> bool:
        return self.schedule.stage_at(epoch) >= self._last_stage

    def on_train_begin(self, logs=None):
        self._last_stage = len(self.schedule.plan(self.model)) - 1
        self._synced = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._synced:
            self._sync(epoch)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self._competes(epoch):
            return
        if self.best is None or value > self.best[self.monitor]:
            self._save(epoch, float(value))

    def on_train_end(self, logs=None):
        if not self._synced:
            self._sync(self.params["epochs"])

    def _sync(self, start: int) -> None:
        """The best of the epochs before ``start`` (0 unless resumed), saved if its save was
        lost (then it is epoch start - 1, whose state BackupAndRestore just restored)."""
        self._synced = True
        values = self.log.history.get(self.monitor, [])[:start]
        competing = [epoch for epoch in range(len(values)) if self._competes(epoch)]
        if not competing:
            return
        epoch = max(competing, key=lambda e: (values[e], -e))  # the first of the best
        self.best = {"epoch": epoch + 1, self.monitor: values[epoch]}
        saved = load_json(self.state_path) if os.path.isfile(self.state_path) else None
        if epoch == start - 1 and saved != self.best:
            self._save(epoch, values[epoch])

    def _save(self, epoch: int, value: float) -> None:
        self.best = {"epoch": epoch + 1, self.monitor: value}
        variables = _mode_variables(self.model)
        modes = [int(v.numpy()) for v in variables]
        uniq_tf.set_weight_mode(self.model, uniq_tf.Mode.QUANTIZED)
        uniq_tf.set_activation_mode(self.model, uniq_tf.ActMode.QUANTIZED)
        save_model(self.model, self.path)
        for variable, mode in zip(variables, modes, strict=True):
            variable.assign(mode)
        if self.write_state:
            atomic.write_json(self.state_path, self.best)


def backup(ws: Workspace, phase: str) -> keras.callbacks.BackupAndRestore:
    # Kept at the end of fit (delete_checkpoint=False): a process killed after fit but before
    # the phase's results were written restores the last epoch and trains nothing.
    return keras.callbacks.BackupAndRestore(ws.state(phase), delete_checkpoint=False)
