"""Train a float model, then quantize it with UNIQ's stage-wise schedule, and save both.

    .venv/bin/python examples/train.py                   # small_cnn on digits, W4A8, < 1 min
    .venv/bin/python examples/train.py --weight_bits=2
    .venv/bin/python examples/train.py --model=resnet20 --dataset=cifar10 --data_dir=DATA \\
        --float_epochs=160 --optimizer=sgd --learning_rate=0.1 --weight_decay=1e-4 \\
        --epochs_per_stage=2 --uniq_learning_rate=0.01 --batch_size=128
    .venv/bin/python examples/train.py --strategy=mirrored   # every local GPU (or CPU device)
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        .venv/bin/python examples/train.py --strategy=multi_worker   # one per worker

Steps (shared/uniq-method.md section 3): load the data; train the float model (or load
``--pretrained``); evaluate it; ``uniq_tf.quantize_model``; calibrate the activation ranges on a
few training batches; fine-tune with ``uniq_tf.callbacks.GradualQuantization`` (warm-up, one
stage per layer or block, final epochs); evaluate with every quantizer on. ``--output_dir``
receives float_model.h5, quantized_model.h5 (load it inside ``uniq_tf.quantize_scope()``),
best_quantized_model.h5 (the fully quantized epoch with the best validation accuracy),
history.json, summary.json (with the per-layer BOPs) and bops.txt (the BOPs table). Every flag
(and TF_CONFIG) is checked before any training starts.

Distribution (docs/distributed.md): ``--strategy`` picks tf.distribute's default strategy,
MirroredStrategy or MultiWorkerMirroredStrategy (TF_CONFIG as TensorFlow documents it); models
are built and compiled inside ``strategy.scope()`` and ``--batch_size`` is the global batch.
With several workers only the chief writes the outputs; the others write the same files to a
temporary folder and delete it (TensorFlow's recipe: saving may need every worker).

Fault tolerance: both phases back up the training state at every epoch end under
``output_dir/backup`` (``keras.callbacks.BackupAndRestore``). Running the same command again
after the process was killed resumes at the epoch, and so the stage, where it stopped: a
finished float phase is not trained again (float_model.h5 is loaded), an interrupted one resumes
at its last backup, and so does the UNIQ phase. The backup folder is deleted when the run ends.
Every file is written to a temporary name and renamed (os.replace): no partial files.

``run(TrainConfig(...))`` does the same in-process and returns the summary (tests, benchmarks).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

import uniq_tf
from uniq_tf import data, models
from uniq_tf._keras import keras, tf
from uniq_tf.callbacks import STAGE_LOG_KEY, GradualQuantization
from uniq_tf.kquantile import DISTRIBUTIONS
from uniq_tf.quantize import (
    ACTIVATION_BITS_RANGE,
    WEIGHT_BITS_RANGE,
    output_quantizers,
    weight_quantizers,
    wrappers,
)

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("default", "mirrored", "multi_worker")
APPLICATION_MODELS = ("resnet50", "mobilenet_v1")  # the builders that accept weights="imagenet"
MULTI_WORKER_TASK_TYPES = ("chief", "worker")
# Fields that may change between a killed run and its restart: they do not change the training.
RESUMABLE_CHANGES = ("output_dir", "strategy", "verbose")
BACKUP = "backup"


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; the command-line flags mirror these fields and defaults.

    layer_bits: "name=w:a,..." (either side may be empty: "conv1=8:,fc=:8") or a dict
        name -> (w, a). stages: "layer", an int (or its string), "a,b;c,d" (explicit stages of
        kernel layer names), or a list of lists. skip_layers: "a,b" or a sequence of names.
        strategy: one of STRATEGIES; batch_size is the global batch (all replicas together).
    """

    model: str = "small_cnn"
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    augment: bool = True
    weight_bits: int = 4
    activation_bits: int = 8
    layer_bits: str | dict = ""
    skip_layers: str | Sequence[str] = ""
    per_channel: bool = False
    distribution: str = "gaussian"
    high_noise: bool = False
    stages: str | int | list = "layer"
    float_epochs: int = 15
    warmup_epochs: int = 0
    epochs_per_stage: int = 2
    final_epochs: int = 2
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    uniq_learning_rate: float = 3e-4
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    max_steps_per_epoch: int = 0
    calibration_steps: int = 10
    seed: int = 0
    pretrained: str | None = None
    strategy: str = "default"
    output_dir: str = "outputs/train"
    verbose: int = 1


# ---------------------------------------------------------------- parsing and validation


def parse_layer_bits(value: str | dict) -> dict[str, tuple[int | None, int | None]]:
    """ "conv1=8:8,fc=8:" -> {"conv1": (8, 8), "fc": (8, None)}; dicts pass through."""
    if isinstance(value, dict):
        return dict(value)
    out = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, bits = item.partition("=")
        w, colon, a = bits.partition(":")
        if not sep or not colon or not name.strip():
            raise ValueError(
                f"layer_bits entry {item!r} must look like name=weight_bits:activation_bits "
                '(e.g. "conv1=8:8"; leave a side empty to keep the default: "fc=8:")'
            )
        try:
            out[name.strip()] = tuple(int(b) if b.strip() else None for b in (w, a))
        except ValueError as error:
            raise ValueError(f"layer_bits entry {item!r}: bits must be integers") from error
    return out


def parse_stages(value: str | int | list) -> str | int | list[list[str]]:
    """ "layer" | "3" | 3 | "conv1,conv2;fc" -> "layer" | 3 | [["conv1", "conv2"], ["fc"]]."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    if value == "layer":
        return value
    if value.lstrip("-").isdigit():
        return int(value)
    stages = [[n.strip() for n in group.split(",") if n.strip()] for group in value.split(";")]
    if not value or any(not stage for stage in stages):
        raise ValueError(
            f'stages must be "layer", a number, or ";"-separated groups of comma-separated '
            f'layer names ("conv1,conv2;fc"), got {value!r}'
        )
    return stages


def parse_names(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    return tuple(value)


_TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def parse_tf_config(text: str | None) -> tuple[dict[str, list[str]], str, int]:
    """Checks a TF_CONFIG for MultiWorkerMirroredStrategy, as TensorFlow documents it:
    ``{"cluster": {"worker": ["host:port", ...], "chief": ["host:port"]}, "task": {"type":
    "worker", "index": i}}`` ("chief" optional). Returns (cluster, task type, task index);
    ValueError saying what is wrong, so that a worker never starts with a cluster it cannot
    join (it would wait for the others forever)."""
    if not text:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable, set on every "
            f"worker with its own task, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'"
        )
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text!r}") from error
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(
            'TF_CONFIG has no "cluster" (a dict of task type -> list of "host:port"): '
            f"{text!r}; expected e.g. {_TF_CONFIG_EXAMPLE}"
        )
    unknown = sorted(set(cluster) - set(MULTI_WORKER_TASK_TYPES))
    if unknown:
        raise ValueError(
            f"TF_CONFIG cluster has task types {unknown}; MultiWorkerMirroredStrategy allows "
            f"{list(MULTI_WORKER_TASK_TYPES)} (parameter servers and evaluators belong to "
            "other strategies)"
        )
    addresses = []
    for task_type, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts:
            raise ValueError(
                f'TF_CONFIG cluster["{task_type}"] must be a non-empty list of "host:port", '
                f"got {hosts!r}"
            )
        for host in hosts:
            name, _, port = host.rpartition(":") if isinstance(host, str) else ("", "", "")
            if not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f'TF_CONFIG cluster["{task_type}"] has {host!r}, which is not "host:port" '
                    "(port 1..65535)"
                )
        addresses.extend(hosts)
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f'TF_CONFIG cluster has {len(cluster["chief"])} "chief" tasks; at most 1')
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise ValueError(f"TF_CONFIG cluster lists {repeated} more than once")
    task = spec.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError(
            'TF_CONFIG has no "task" saying which task this process is, e.g. '
            '"task": {"type": "worker", "index": 0}'
        )
    task_type, index = task["type"], task.get("index", 0)
    if task_type not in cluster:
        raise ValueError(
            f"TF_CONFIG task type {task_type!r} is not in the cluster, whose task types are "
            f"{sorted(cluster)}"
        )
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"TF_CONFIG task index must be an integer, got {index!r}")
    if not 0 <= index < len(cluster[task_type]):
        raise ValueError(
            f"TF_CONFIG task index {index} is out of range: the cluster has "
            f"{len(cluster[task_type])} {task_type!r} task(s), indices "
            f"0..{len(cluster[task_type]) - 1}"
        )
    return cluster, task_type, index


def _check_int(config, field: str, minimum: int, maximum: int | None = None) -> None:
    value = getattr(config, field)
    bad = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if bad or value < minimum or (maximum is not None and value > maximum):
        allowed = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{field} must be an integer {allowed}, got {value!r}")


def _check_choice(config, field: str, allowed: Sequence[str]) -> None:
    if getattr(config, field) not in allowed:
        raise ValueError(f"Unknown {field} {getattr(config, field)!r}; allowed: {list(allowed)}")


def validate_config(config: TrainConfig) -> None:
    """The checks that need neither data nor a model; ValueError naming the flag."""
    _check_choice(config, "model", sorted(models.MODELS))
    if config.dataset.split("/")[0] not in data.DATASETS:
        raise ValueError(f"Unknown dataset {config.dataset!r}; allowed: {list(data.DATASETS)}")
    _check_choice(config, "optimizer", OPTIMIZERS)
    _check_choice(config, "lr_schedule", LR_SCHEDULES)
    _check_choice(config, "distribution", DISTRIBUTIONS)
    _check_choice(config, "strategy", STRATEGIES)
    _check_int(config, "weight_bits", *WEIGHT_BITS_RANGE)
    _check_int(config, "activation_bits", *ACTIVATION_BITS_RANGE)
    for field in ("float_epochs", "warmup_epochs", "final_epochs", "max_steps_per_epoch",
                  "calibration_steps", "seed"):
        _check_int(config, field, 0)
    _check_int(config, "epochs_per_stage", 1)
    _check_int(config, "batch_size", 1)
    for field in ("learning_rate", "uniq_learning_rate"):
        if not getattr(config, field) > 0:
            raise ValueError(f"{field} must be > 0, got {getattr(config, field)!r}")
    if not 0 <= config.momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {config.momentum!r}")
    if not config.weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {config.weight_decay!r}")
    if config.pretrained == "imagenet" and config.model not in APPLICATION_MODELS:
        raise ValueError(
            f'pretrained="imagenet" is available for {list(APPLICATION_MODELS)}, not '
            f"{config.model!r}; pass a weights file (.h5) instead"
        )
    if config.pretrained not in (None, "", "imagenet") and not os.path.isfile(config.pretrained):
        raise ValueError(f"pretrained weights file {config.pretrained!r} does not exist")
    parse_layer_bits(config.layer_bits)
    parse_stages(config.stages)
    if config.strategy == "multi_worker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
    elif os.environ.get("TF_CONFIG"):
        # Started as one of several workers, each would train alone into the same output_dir.
        warnings.warn(
            f"TF_CONFIG is set but --strategy={config.strategy}: this process trains alone. "
            "Pass --strategy=multi_worker to train with the cluster TF_CONFIG describes.",
            stacklevel=2,
        )


def check_resumable(config: TrainConfig) -> None:
    """A backup left in output_dir by a killed run must come from the same settings, or the
    restart would continue someone else's training."""
    path = os.path.join(config.output_dir, BACKUP, "run.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)["config"]
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


# ---------------------------------------------------------------- distribution


def make_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    """The tf.distribute strategy of ``config.strategy`` (TF_CONFIG already checked)."""
    if config.strategy == "mirrored":
        return _mirrored_strategy()
    if config.strategy == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:  # TensorFlow's runtime already started in this process
            raise RuntimeError(
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs anything "
                "in the process: run examples/train.py --strategy=multi_worker as a process "
                f"of its own ({error})"
            ) from error
    return tf.distribute.get_strategy()


@functools.cache
def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """One per process: a second MirroredStrategy numbers its collective ops from the start
    again, and TensorFlow matches them with the first one's (shape mismatch errors)."""
    return tf.distribute.MirroredStrategy()


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
                if _TMP_NAME.fullmatch(name):
                    os.remove(os.path.join(folder, name))
        if not os.path.exists(self.state("run.json")):
            save_json({"config": _resume_key(config)}, self.state("run.json"))

    def finish(self) -> None:
        """The run is complete: its state (the backups) and any worker temp folder go."""
        shutil.rmtree(self.backup_dir if self.is_chief else self.write_dir, ignore_errors=True)


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker reads the whole pipeline and keeps its part of each global batch, so all
    workers take the same number of steps (file sharding gives each its own file count)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


# ---------------------------------------------------------------- building blocks


def load_data(config: TrainConfig):
    """(train, test, info); raises ValueError for unknown names or a data_dir without data."""
    common = dict(
        data_dir=config.data_dir or None, batch_size=config.batch_size,
        image_size=config.image_size, seed=config.seed,
        normalization=models.PREPROCESSING.get(config.model, "imagenet"),
    )
    train, info = data.get_dataset(config.dataset, "train", augment=config.augment, **common)
    test, _ = data.get_dataset(config.dataset, "test", **common)
    if config.max_steps_per_epoch:
        train = train.take(config.max_steps_per_epoch)
    if config.strategy == "multi_worker":
        train, test = _shard_by_data(train), _shard_by_data(test)
    return train, test, info


def build_float_model(config: TrainConfig, info: data.DatasetInfo) -> keras.Model:
    kwargs = {"weights": "imagenet"} if config.pretrained == "imagenet" else {}
    model = models.get_model(config.model, info.input_shape, info.num_classes, **kwargs)
    if config.pretrained not in (None, "", "imagenet"):
        model.load_weights(config.pretrained)
    return model


def quantize(config: TrainConfig, model: keras.Model) -> keras.Model:
    return uniq_tf.quantize_model(
        model, config.weight_bits, config.activation_bits,
        layer_bits=parse_layer_bits(config.layer_bits),
        skip_layers=parse_names(config.skip_layers), per_channel=config.per_channel,
        distribution=config.distribution, high_noise=config.high_noise,
    )


def make_schedule(config: TrainConfig) -> GradualQuantization:
    return GradualQuantization(
        stages=parse_stages(config.stages), warmup_epochs=config.warmup_epochs,
        epochs_per_stage=config.epochs_per_stage, final_epochs=config.final_epochs,
        verbose=config.verbose,
    )


def compile_model(
    config: TrainConfig, model: keras.Model, learning_rate: float, total_steps: int
) -> None:
    """Call inside the strategy's scope (the optimizer's variables are mirrored too)."""
    rate = learning_rate
    if config.lr_schedule == "cosine" and total_steps > 0:
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=decay)
    else:
        optimizer = keras.optimizers.Adam(rate, weight_decay=decay)
    if decay:
        # Decay the kernels only, the usual choice: batch norm and biases are not decayed.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def fit_model(
    model: keras.Model, train, epochs: int, callbacks=(), verbose: int = 1, validation_data=None
) -> dict:
    """model.fit; returns the history of this call as {metric: [float per epoch]}."""
    history = model.fit(train, epochs=epochs, callbacks=list(callbacks), verbose=verbose,
                        validation_data=validation_data)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def evaluate(model: keras.Model, test) -> float:
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


# A temporary name of _write_atomically: ".<name>.<pid>.tmp<extension>".
_TMP_NAME = re.compile(r"\..+\.\d+\.tmp(\.[A-Za-z0-9]+)?")


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    """write(tmp) then os.replace: a failure leaves no partial file and keeps an older one
    (a killed process leaves the temporary file, which the next run's start removes)."""
    folder, base = os.path.split(path)
    # Same folder (os.replace is atomic within a file system) and same extension (Keras picks
    # the format by it).
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.tmp{os.path.splitext(base)[1]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model(model: keras.Model, path: str) -> None:
    def write(tmp):
        with warnings.catch_warnings():
            # HDF5 on purpose: the .keras format cannot load TFMOT-quantized models (TFMOT #1123).
            warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save")
            model.save(tmp, save_format="h5")

    _write_atomically(path, write)


def save_json(obj, path: str) -> None:
    save_text(json.dumps(obj, indent=2) + "\n", path)


def save_text(text: str, path: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _write_atomically(path, write)


def load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def codebook_report(qmodel: keras.Model) -> dict:
    """Per quantized kernel: bits, codebook size 2^b and the distinct values it really holds
    (2^b per tensor; up to 2^b per output channel with per_channel)."""
    return {
        key: {
            "bits": book.bits,
            "codebook_size": book.size,
            "distinct_values": int(np.unique(book.dequantize()).size),
        }
        for key, book in uniq_tf.get_codebooks(qmodel).items()
    }


def quantized_kernels_sha256(qmodel: keras.Model) -> str:
    """SHA-256 of every quantized kernel (codebook values, float32 bytes), in key order: equal
    digests mean bit-identical quantized weights (e.g. on every worker)."""
    digest = hashlib.sha256()
    for key, book in sorted(uniq_tf.get_codebooks(qmodel).items()):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(book.dequantize(), np.float32).tobytes())
    return digest.hexdigest()


def bops_report(float_model: keras.Model, qmodel: keras.Model) -> dict:
    """Total BOPs (the paper's, and MACs x b_w x b_a) of the float (32-bit) and UNIQ models."""
    reports = {"float": uniq_tf.summary(float_model), "quantized": uniq_tf.summary(qmodel)}
    out = {f"{name}_bops": r.total_bops for name, r in reports.items()}
    out.update({f"{name}_bops_simple": r.total_bops_simple for name, r in reports.items()})
    out["macs"] = reports["quantized"].total_macs
    out["float_over_quantized_bops"] = out["float_bops"] / out["quantized_bops"]
    return out


def _steps(train, epochs: int) -> int:
    per_epoch = int(train.cardinality())
    if per_epoch < 0:
        raise ValueError("The training pipeline has no known length; cannot plan a schedule")
    return per_epoch * epochs


# ---------------------------------------------------------------- resumable training


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
            save_json(self.history, self.path)

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
            save_json(self.best, self.state_path)


def _backup(ws: Workspace, phase: str) -> keras.callbacks.BackupAndRestore:
    # Kept at the end of fit (delete_checkpoint=False): a process killed after fit but before
    # the phase's results were written restores the last epoch and trains nothing.
    return keras.callbacks.BackupAndRestore(ws.state(phase), delete_checkpoint=False)


# ---------------------------------------------------------------- the run


def prepare(config: TrainConfig):
    """Every check before training: flags, TF_CONFIG, a resumable backup, data, model, layer
    names and stages. Creates the strategy first (MultiWorkerMirroredStrategy must exist
    before TensorFlow runs anything).

    Returns (train, test, info, float model, planned stages, strategy).
    """
    validate_config(config)
    check_resumable(config)
    strategy = make_strategy(config)
    keras.utils.set_random_seed(config.seed)  # before the data pipelines and the model exist
    train, test, info = load_data(config)
    with strategy.scope():
        model = build_float_model(config, info)
    # Quantizing the untrained model checks layer_bits/skip_layers names and the stage plan
    # now, instead of after the float training.
    planned = make_schedule(config).plan(quantize(config, model))
    return train, test, info, model, planned, strategy


def train_float(config: TrainConfig, ws: Workspace, strategy, model: keras.Model, train,
                test) -> dict:
    """Float training (none if float_epochs is 0), or, if an earlier process of this run
    finished it, float_model.h5. Returns {"history", "accuracy", "seconds"}."""
    record_path = ws.state("float_phase.json")
    if os.path.isfile(record_path) and os.path.isfile(ws.final("float_model.h5")):
        model.load_weights(ws.final("float_model.h5"))
        if config.verbose:
            print("Float training was finished before the restart: loaded "
                  f"{ws.final('float_model.h5')}", flush=True)
        return load_json(record_path)
    start = time.perf_counter()
    with strategy.scope():
        compile_model(config, model, config.learning_rate, _steps(train, config.float_epochs))
    if config.verbose:
        print(f"Float training: {config.model} on {config.dataset}, "
              f"{config.float_epochs} epochs", flush=True)
    log = EpochLog(ws.state("float_history.json"), "Float training", ws.is_chief, config.verbose)
    if config.float_epochs:  # Keras refuses epochs=0; a pretrained model may need no training
        fit_model(model, train, config.float_epochs, callbacks=[log, _backup(ws, "float")],
                  verbose=config.verbose)
    record = {"history": log.history, "accuracy": evaluate(model, test),
              "seconds": round(time.perf_counter() - start, 2)}
    save_model(model, ws.out("float_model.h5"))
    if ws.is_chief:
        save_json(record, record_path)  # from here on a restart skips the float training
        shutil.rmtree(ws.state("float"), ignore_errors=True)
    return record


def train_uniq(config: TrainConfig, ws: Workspace, strategy, model: keras.Model, train, test):
    """quantize_model, calibrate, the stage-wise UNIQ fine-tune (resumed from its backup if
    there is one), evaluation with every quantizer on.

    Returns (quantized model, history, accuracy before UNIQ, accuracy, best epoch or None).
    """
    with strategy.scope():
        qmodel = quantize(config, model)
    uniq_tf.calibrate_activations(qmodel, train, steps=config.calibration_steps or None,
                                  verbose=bool(config.verbose))
    schedule = make_schedule(config)
    epochs = schedule.total_epochs(qmodel)
    with strategy.scope():
        compile_model(config, qmodel, config.uniq_learning_rate, _steps(train, epochs))
    # Every weight quantizer starts NOISY, which evaluates with the codebooks: this is the
    # accuracy of quantizing the trained model without any UNIQ training. Kept from the first
    # process of the run: a restart sees the data in another order and calibrates differently
    # (the restored backup then replaces those ranges).
    start_path = ws.state("uniq_start.json")
    if os.path.isfile(start_path):
        before = load_json(start_path)["accuracy_before_uniq"]
    else:
        before = evaluate(qmodel, test)
        if ws.is_chief:
            save_json({"accuracy_before_uniq": before}, start_path)
    if config.verbose:
        print(f"UNIQ: W{config.weight_bits}A{config.activation_bits}, {epochs} epochs; "
              f"quantized without training: accuracy {before:.4f}", flush=True)
    log = EpochLog(ws.state("uniq_history.json"), "UNIQ", ws.is_chief, config.verbose)
    best = BestQuantizedModel(ws.out("best_quantized_model.h5"), ws.state("best.json"),
                              schedule, log, ws.is_chief)
    fit_model(qmodel, train, epochs, callbacks=[schedule, log, _backup(ws, "uniq"), best],
              verbose=config.verbose, validation_data=test)
    # Evaluate with every quantizer on, whatever state the schedule ended in.
    uniq_tf.set_weight_mode(qmodel, uniq_tf.Mode.QUANTIZED)
    uniq_tf.set_activation_mode(qmodel, uniq_tf.ActMode.QUANTIZED)
    return qmodel, log.history, before, evaluate(qmodel, test), best.best


OUTPUTS = ("float_model.h5", "quantized_model.h5", "best_quantized_model.h5", "history.json",
           "summary.json", "bops.txt")


def run(config: TrainConfig, prepared: tuple | None = None) -> dict:
    """The whole pipeline (module docstring); returns the summary also written to summary.json.

    ``prepared``: what ``prepare(config)`` returned, if the caller already ran the checks.
    Running it again after the process was killed resumes the run (same config required).
    """
    train, test, info, model, planned, strategy = prepared or prepare(config)
    ws = Workspace.for_strategy(config.output_dir, strategy)
    ws.start(config)
    if config.verbose:
        print(f"tf.distribute: {type(strategy).__name__}, {strategy.num_replicas_in_sync} "
              f"replica(s), global batch {config.batch_size}; this process: {ws.role}",
              flush=True)
    floats = train_float(config, ws, strategy, model, train, test)

    start = time.perf_counter()
    qmodel, uniq_history, before_accuracy, quantized_accuracy, best = train_uniq(
        config, ws, strategy, model, train, test
    )
    uniq_seconds = time.perf_counter() - start
    save_model(qmodel, ws.out("quantized_model.h5"))
    save_json({"float": floats["history"], "uniq": uniq_history}, ws.out("history.json"))
    report = uniq_tf.summary(qmodel)
    save_text(report.table() + "\n", ws.out("bops.txt"))

    stages = [int(s) for s in uniq_history.get(STAGE_LOG_KEY, [])]
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "float_accuracy": floats["accuracy"],
        "quantized_accuracy_before_uniq": before_accuracy,
        "quantized_accuracy": quantized_accuracy,
        "best": best,
        "weight_bits": config.weight_bits,
        "activation_bits": config.activation_bits,
        "layer_bits": {k: list(v) for k, v in parse_layer_bits(config.layer_bits).items()},
        "skip_layers": list(parse_names(config.skip_layers)),
        "stages": planned,
        "epochs": {
            "float": config.float_epochs,
            "warmup": config.warmup_epochs,
            "per_stage": config.epochs_per_stage,
            "final": config.final_epochs,
            "uniq_total": len(stages),
        },
        "uniq_stage_per_epoch": stages,
        "bops": bops_report(model, qmodel),
        "bops_layers": report.layers,
        "codebooks": codebook_report(qmodel),
        "quantized_kernels_sha256": quantized_kernels_sha256(qmodel),
        "activation_ranges": {
            name: {"min": lo, "max": hi, "bits": bits}
            for name, (lo, hi, bits) in uniq_tf.get_activation_ranges(qmodel).items()
        },
        "strategy": {"name": config.strategy, "replicas": strategy.num_replicas_in_sync},
        # Of the process that finished the phase (a resumed phase counts its own part only).
        "seconds": {"float_training": floats["seconds"], "uniq": round(uniq_seconds, 2)},
        "outputs": {
            name: os.path.abspath(ws.final(name)) for name in OUTPUTS
            if best is not None or name != "best_quantized_model.h5"
        },
        "config": dataclasses.asdict(config),
    }
    save_json(summary, ws.out("summary.json"))
    ws.finish()
    if config.verbose:
        print(report)
        print(f"Float accuracy {floats['accuracy']:.4f}; UNIQ W{config.weight_bits}"
              f"A{config.activation_bits} accuracy {quantized_accuracy:.4f}")
        print(f"Outputs in {os.path.abspath(config.output_dir)}: "
              + ", ".join(summary["outputs"]))
    if config.strategy == "multi_worker":
        # Each worker says where it ended, so their logs show that they stayed in step.
        print(f"[{ws.role}] final stage {stages[-1] if stages else None} of {len(planned)}; "
              f"quantized kernels sha256 {summary['quantized_kernels_sha256']}", flush=True)
    return summary


# ---------------------------------------------------------------- command line


def _define_flags():
    from absl import flags

    d = TrainConfig()
    flags.DEFINE_enum("model", d.model, sorted(models.MODELS), "Model to train.")
    flags.DEFINE_string("dataset", d.dataset, f"One of {list(data.DATASETS)} "
                        "(imagenette/<tfds config> also works).")
    flags.DEFINE_string("data_dir", d.data_dir, "tensorflow-datasets data_dir with the prepared "
                        "data (nothing is downloaded).")
    flags.DEFINE_integer("image_size", d.image_size, "Square input size (default per data set).")
    flags.DEFINE_bool("augment", d.augment, "Random crops/flips while training.")
    flags.DEFINE_integer("weight_bits", d.weight_bits, "Codebook index width b (2^b levels).")
    flags.DEFINE_integer("activation_bits", d.activation_bits, "Activation bits.")
    flags.DEFINE_string("layer_bits", d.layer_bits, 'Per-layer bits, e.g. "conv1=8:8,fc=8:8".')
    flags.DEFINE_string("skip_layers", d.skip_layers, "Comma-separated layers to keep float.")
    flags.DEFINE_bool("per_channel", d.per_channel, "Per-output-channel codebooks.")
    flags.DEFINE_enum("distribution", d.distribution, list(DISTRIBUTIONS), "Fitted CDF.")
    flags.DEFINE_bool("high_noise", d.high_noise, "Noise of +-1/k instead of +-1/(2k).")
    flags.DEFINE_string("stages", str(d.stages), '"layer", a number of stages, or explicit '
                        'groups "conv1,conv2;fc".')
    flags.DEFINE_integer("float_epochs", d.float_epochs, "Float training epochs.")
    flags.DEFINE_integer("warmup_epochs", d.warmup_epochs, "UNIQ warm-up epochs (all float).")
    flags.DEFINE_integer("epochs_per_stage", d.epochs_per_stage, "Epochs per UNIQ stage.")
    flags.DEFINE_integer("final_epochs", d.final_epochs, "Epochs after the last stage.")
    flags.DEFINE_enum("optimizer", d.optimizer, list(OPTIMIZERS), "Optimizer.")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Float training learning rate.")
    flags.DEFINE_float("uniq_learning_rate", d.uniq_learning_rate, "UNIQ fine-tune learning "
                       "rate.")
    flags.DEFINE_enum("lr_schedule", d.lr_schedule, list(LR_SCHEDULES), "Per phase.")
    flags.DEFINE_float("momentum", d.momentum, "SGD momentum.")
    flags.DEFINE_float("weight_decay", d.weight_decay, "Decoupled weight decay of the kernels "
                       "(variable -= learning_rate * weight_decay * variable per step).")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size (all replicas).")
    flags.DEFINE_integer("max_steps_per_epoch", d.max_steps_per_epoch, "0 = whole epochs.")
    flags.DEFINE_integer("calibration_steps", d.calibration_steps, "Batches to calibrate "
                         "activation ranges on (0 = one pass over the training data).")
    flags.DEFINE_integer("seed", d.seed, "Random seed.")
    flags.DEFINE_string("pretrained", d.pretrained, 'Float weights (.h5) or "imagenet".')
    flags.DEFINE_enum("strategy", d.strategy, list(STRATEGIES), "tf.distribute strategy: "
                      "default (one device), mirrored (all local devices), multi_worker "
                      "(MultiWorkerMirroredStrategy; reads TF_CONFIG).")
    flags.DEFINE_string("output_dir", d.output_dir, "Where the outputs go (and the backups that "
                        "let a killed run resume when the same command runs again).")
    flags.DEFINE_integer("verbose", d.verbose, "0 silent, 1 progress bars.")
    return flags.FLAGS


def main(argv) -> None:
    from absl import app, flags, logging

    # TensorFlow logs an INFO line per checkpoint, which would break the progress bars.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = {f.name: getattr(flags.FLAGS, f.name) for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**values)
    try:
        prepared = prepare(config)
    except ValueError as error:  # a bad flag, found before any training
        raise app.UsageError(str(error)) from error
    run(config, prepared)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
