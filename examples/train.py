"""Train a float model, then quantize it with UNIQ's stage-wise schedule, and save both.

    .venv/bin/python examples/train.py                   # small_cnn on digits, W4A8, < 1 min
    .venv/bin/python examples/train.py --weight_bits=2
    .venv/bin/python examples/train.py --model=resnet20 --dataset=cifar10 --data_dir=DATA \\
        --float_epochs=160 --optimizer=sgd --learning_rate=0.1 --weight_decay=1e-4 \\
        --epochs_per_stage=2 --uniq_learning_rate=0.01 --batch_size=128

Steps (shared/uniq-method.md section 3): load the data; train the float model (or load
``--pretrained``); evaluate it; ``uniq_tf.quantize_model``; calibrate the activation ranges on a
few training batches; fine-tune with ``uniq_tf.callbacks.GradualQuantization`` (warm-up, one
stage per layer or block, final epochs); evaluate with every quantizer on. ``--output_dir``
receives float_model.h5, quantized_model.h5 (load it inside ``uniq_tf.quantize_scope()``),
history.json and summary.json. Every flag is checked before any training starts.

``run(TrainConfig(...))`` does the same in-process and returns the summary (tests, benchmarks).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

import uniq_tf
from uniq_tf import data, models
from uniq_tf._keras import keras
from uniq_tf.callbacks import STAGE_LOG_KEY, GradualQuantization
from uniq_tf.kquantile import DISTRIBUTIONS
from uniq_tf.quantize import ACTIVATION_BITS_RANGE, WEIGHT_BITS_RANGE

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
APPLICATION_MODELS = ("resnet50", "mobilenet_v1")  # the builders that accept weights="imagenet"


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; the command-line flags mirror these fields and defaults.

    layer_bits: "name=w:a,..." (either side may be empty: "conv1=8:,fc=:8") or a dict
        name -> (w, a). stages: "layer", an int (or its string), "a,b;c,d" (explicit stages of
        kernel layer names), or a list of lists. skip_layers: "a,b" or a sequence of names.
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


def fit_model(model: keras.Model, train, epochs: int, callbacks=(), verbose: int = 1) -> dict:
    """model.fit; returns the history as {metric: [float per epoch]}."""
    history = model.fit(train, epochs=epochs, callbacks=list(callbacks), verbose=verbose)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def evaluate(model: keras.Model, test) -> float:
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    """write(tmp) then os.replace: a failure leaves no partial file and keeps an older one."""
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
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    _write_atomically(path, write)


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


# ---------------------------------------------------------------- the run


def prepare(config: TrainConfig):
    """Every check before training: flags, data, model, layer names and stages.

    Returns (train, test, info, float model, planned stages).
    """
    validate_config(config)
    keras.utils.set_random_seed(config.seed)  # before the data pipelines and the model exist
    train, test, info = load_data(config)
    model = build_float_model(config, info)
    # Quantizing the untrained model checks layer_bits/skip_layers names and the stage plan
    # now, instead of after the float training.
    planned = make_schedule(config).plan(quantize(config, model))
    return train, test, info, model, planned


def train_float(config: TrainConfig, model: keras.Model, train, test) -> tuple[dict, float]:
    """Float training (none if float_epochs is 0); returns (history, test accuracy)."""
    compile_model(config, model, config.learning_rate, _steps(train, config.float_epochs))
    if config.verbose:
        print(f"Float training: {config.model} on {config.dataset}, "
              f"{config.float_epochs} epochs", flush=True)
    history = {}
    if config.float_epochs:  # Keras refuses epochs=0; a pretrained model may need no training
        history = fit_model(model, train, config.float_epochs, verbose=config.verbose)
    return history, evaluate(model, test)


def train_uniq(config: TrainConfig, model: keras.Model, train, test):
    """quantize_model, calibrate, the stage-wise UNIQ fine-tune, evaluation with every
    quantizer on. Returns (quantized model, history, accuracy before UNIQ, accuracy)."""
    qmodel = quantize(config, model)
    uniq_tf.calibrate_activations(qmodel, train, steps=config.calibration_steps or None,
                                  verbose=bool(config.verbose))
    schedule = make_schedule(config)
    epochs = schedule.total_epochs(qmodel)
    compile_model(config, qmodel, config.uniq_learning_rate, _steps(train, epochs))
    # Every weight quantizer starts NOISY, which evaluates with the codebooks: this is the
    # accuracy of quantizing the trained model without any UNIQ training.
    before = evaluate(qmodel, test)
    if config.verbose:
        print(f"UNIQ: W{config.weight_bits}A{config.activation_bits}, {epochs} epochs; "
              f"quantized without training: accuracy {before:.4f}", flush=True)
    history = fit_model(qmodel, train, epochs, callbacks=[schedule], verbose=config.verbose)
    # Evaluate with every quantizer on, whatever state the schedule ended in.
    uniq_tf.set_weight_mode(qmodel, uniq_tf.Mode.QUANTIZED)
    uniq_tf.set_activation_mode(qmodel, uniq_tf.ActMode.QUANTIZED)
    return qmodel, history, before, evaluate(qmodel, test)


def run(config: TrainConfig, prepared: tuple | None = None) -> dict:
    """The whole pipeline (module docstring); returns the summary also written to summary.json.

    ``prepared``: what ``prepare(config)`` returned, if the caller already ran the checks.
    """
    train, test, info, model, planned = prepared or prepare(config)
    os.makedirs(config.output_dir, exist_ok=True)
    paths = {
        name: os.path.join(config.output_dir, name)
        for name in ("float_model.h5", "quantized_model.h5", "history.json", "summary.json")
    }
    start = time.perf_counter()
    float_history, float_accuracy = train_float(config, model, train, test)
    float_seconds = time.perf_counter() - start
    save_model(model, paths["float_model.h5"])

    start = time.perf_counter()
    qmodel, uniq_history, before_accuracy, quantized_accuracy = train_uniq(
        config, model, train, test
    )
    uniq_seconds = time.perf_counter() - start
    save_model(qmodel, paths["quantized_model.h5"])
    save_json({"float": float_history, "uniq": uniq_history}, paths["history.json"])

    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "float_accuracy": float_accuracy,
        "quantized_accuracy_before_uniq": before_accuracy,
        "quantized_accuracy": quantized_accuracy,
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
            "uniq_total": len(uniq_history.get(STAGE_LOG_KEY, [])),
        },
        "uniq_stage_per_epoch": [int(s) for s in uniq_history.get(STAGE_LOG_KEY, [])],
        "bops": bops_report(model, qmodel),
        "codebooks": codebook_report(qmodel),
        "activation_ranges": {
            name: {"min": lo, "max": hi, "bits": bits}
            for name, (lo, hi, bits) in uniq_tf.get_activation_ranges(qmodel).items()
        },
        "seconds": {"float_training": round(float_seconds, 2), "uniq": round(uniq_seconds, 2)},
        "outputs": {name: os.path.abspath(path) for name, path in paths.items()},
        "config": dataclasses.asdict(config),
    }
    save_json(summary, paths["summary.json"])
    if config.verbose:
        print(f"Float accuracy {float_accuracy:.4f}; UNIQ W{config.weight_bits}"
              f"A{config.activation_bits} accuracy {quantized_accuracy:.4f}")
        print(f"Outputs in {os.path.abspath(config.output_dir)}: " + ", ".join(paths))
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
    flags.DEFINE_integer("batch_size", d.batch_size, "Batch size.")
    flags.DEFINE_integer("max_steps_per_epoch", d.max_steps_per_epoch, "0 = whole epochs.")
    flags.DEFINE_integer("calibration_steps", d.calibration_steps, "Batches to calibrate "
                         "activation ranges on (0 = one pass over the training data).")
    flags.DEFINE_integer("seed", d.seed, "Random seed.")
    flags.DEFINE_string("pretrained", d.pretrained, 'Float weights (.h5) or "imagenet".')
    flags.DEFINE_string("output_dir", d.output_dir, "Where the outputs go.")
    flags.DEFINE_integer("verbose", d.verbose, "0 silent, 1 progress bars.")
    return flags.FLAGS


def main(argv) -> None:
    from absl import app, flags

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
