"""The training pipeline: checks and building blocks, float training, the stage-wise UNIQ
fine-tune and the summary (uniq-train's module docstring describes the run)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import time

import numpy as np

import uniq_tf
from uniq_tf._keras import keras
from uniq_tf.cost.allocate import check_budget
from uniq_tf.schedule.gradual import STAGE_LOG_KEY, GradualQuantization
from uniq_tf.training.config import (
    TrainConfig,
    apply_preset,
    has_budget,
    normalization,
    parse_bit_list,
    parse_layer_bits,
    parse_names,
    parse_stages,
    validate_config,
)
from uniq_tf.training.resume import (
    BestQuantizedModel,
    EpochLog,
    Workspace,
    backup,
    check_resumable,
    load_json,
    save_model,
)
from uniq_tf.training.strategy import make_strategy, shard_by_data
from uniq_tf.util import atomic
from uniq_tf.zoo import data, models


def load_data(config: TrainConfig):
    """(train, test, info); raises ValueError for unknown names or a data_dir without data."""
    common = dict(
        data_dir=config.data_dir or None, batch_size=config.batch_size,
        image_size=config.image_size, seed=config.seed,
        normalization=normalization(config),
    )
    train, info = data.get_dataset(config.dataset, "train", augment=config.augment, **common)
    test, _ = data.get_dataset(config.dataset, "test", **common)
    if config.max_steps_per_epoch:
        train = train.take(config.max_steps_per_epoch)
    if config.strategy == "multi_worker":
        train, test = shard_by_data(train), shard_by_data(test)
    return train, test, info


def build_float_model(config: TrainConfig, info: data.DatasetInfo) -> keras.Model:
    kwargs = {"weights": "imagenet"} if config.pretrained == "imagenet" else {}
    model = models.get_model(config.model, info.input_shape, info.num_classes, **kwargs)
    if config.pretrained not in (None, "", "imagenet"):
        model.load_weights(config.pretrained)
    return model


def settings(config: TrainConfig) -> uniq_tf.UniqSettings:
    """The run's model-wide UNIQ settings."""
    return uniq_tf.UniqSettings(
        config.weight_bits, config.activation_bits, per_channel=config.per_channel,
        distribution=config.distribution, noise=config.noise, high_noise=config.high_noise)


def quantize(config: TrainConfig, model: keras.Model) -> keras.Model:
    """``quantize_model`` with the run's settings; with ``grid_bits``, every hard codebook is
    on that integer grid from the start (``uniq_tf.set_grid_bits``), so the FPGA export keeps
    B = grid_bits and computes what the trained model computes."""
    qmodel = uniq_tf.quantize_model(
        model, layer_bits=parse_layer_bits(config.layer_bits),
        skip_layers=parse_names(config.skip_layers), settings=settings(config),
    )
    if config.grid_bits:
        uniq_tf.set_grid_bits(qmodel, config.grid_bits)
    return qmodel


def make_schedule(config: TrainConfig) -> GradualQuantization:
    return GradualQuantization(
        stages=parse_stages(config.stages), warmup_epochs=config.warmup_epochs,
        epochs_per_stage=config.epochs_per_stage, final_epochs=config.final_epochs,
        first_stage_epochs=config.first_stage_epochs or None,
        polish_epochs=config.polish_epochs, verbose=config.verbose,
    )


def compile_model(
    config: TrainConfig, model: keras.Model, learning_rate: float, total_steps: int,
    final_steps: int = 0,
) -> None:
    """Call inside the strategy's scope (the optimizer's variables are mirrored too).
    ``final_steps``: the last steps, where the "step" schedule uses a tenth of the rate."""
    rate = learning_rate
    if config.lr_schedule == "cosine" and total_steps > 0:
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    if config.lr_schedule == "step" and 0 < final_steps < total_steps:
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [total_steps - final_steps], [learning_rate, learning_rate / 10])
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
        jit_compile=config.jit_compile,
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


def codebook_report(qmodel: keras.Model) -> dict:
    """Per quantized kernel: bits, codebook size 2^b, the distinct values it really holds
    (2^b per tensor; up to 2^b per output channel with per_channel) and its integer grid
    width (``grid_bits``, None without one)."""
    return {
        key: {
            "bits": book.bits,
            "codebook_size": book.size,
            "distinct_values": int(np.unique(book.dequantize()).size),
            "grid_bits": book.grid_bits,
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


def prepare(config: TrainConfig):
    """Every check before training: flags, TF_CONFIG, a resumable backup, data, model, layer
    names and stages. Creates the strategy first (MultiWorkerMirroredStrategy must exist
    before TensorFlow runs anything).

    Returns (train, test, info, float model, planned stages, strategy).
    """
    config = apply_preset(config)
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
    if has_budget(config):  # a budget below the smallest plan fails now, not after training
        _check_budget(config, model)
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
        fit_model(model, train, config.float_epochs, callbacks=[log, backup(ws, "float")],
                  verbose=config.verbose)
    record = {"history": log.history, "accuracy": evaluate(model, test),
              "seconds": round(time.perf_counter() - start, 2)}
    save_model(model, ws.out("float_model.h5"))
    if ws.is_chief:
        atomic.write_json(record_path, record)  # from here on a restart skips the float training
        shutil.rmtree(ws.state("float"), ignore_errors=True)
    return record


def _budget(value: float, float_value: float, unit: float = 1.0) -> float | None:
    """None for 0; a value <= 1 is a fraction of the float model's ``float_value``, a larger
    one counts ``unit``s."""
    if not value:
        return None
    return value * float_value if value <= 1 else value * unit


def _allocation_args(config: TrainConfig, model: keras.Model) -> dict:
    """The budgets (fractions resolved against the float model) and candidates."""
    floats = uniq_tf.summary(model)
    return dict(
        max_bops=_budget(config.max_bops, floats.total_bops),
        max_weight_bytes=_budget(config.max_weight_kb, floats.total_weight_memory_bits / 8,
                                 unit=1000),
        weight_bits=parse_bit_list(config.allocation_weight_bits, "allocation_weight_bits"),
        activation_bits=parse_bit_list(config.allocation_activation_bits,
                                       "allocation_activation_bits"),
        layer_bits=parse_layer_bits(config.layer_bits),
        skip_layers=parse_names(config.skip_layers), settings=settings(config),
    )


def _check_budget(config: TrainConfig, model: keras.Model) -> None:
    try:
        check_budget(model, **_allocation_args(config, model))
    except ValueError as error:
        floats = uniq_tf.summary(model)
        raise ValueError(
            f"{error} (--max_bops={config.max_bops:g}, --max_weight_kb="
            f"{config.max_weight_kb:g}: a value <= 1 is a fraction of the float model's "
            f"{floats.total_bops:.6g} BOPs or {floats.total_weight_memory_bits / 8:.6g} bytes)"
        ) from error


def allocate(config: TrainConfig, ws: Workspace, model: keras.Model, train) -> dict | None:
    """The budget's plan: uniq_tf.allocate_bits on the trained float model (None without a
    budget). Returns {"plan": {layer: [w, a]}, "report": AllocationReport.to_dict()}, kept in
    the backup folder so that a resumed run trains the same plan."""
    if not has_budget(config):
        return None
    path = ws.state("allocation.json")
    if os.path.isfile(path):
        return load_json(path)
    plan, report = uniq_tf.allocate_bits(
        model, train, batches=config.allocation_batches, **_allocation_args(config, model))
    record = {"plan": {name: list(pair) for name, pair in plan.items()},
              "report": report.to_dict()}
    if config.verbose:
        print(report, flush=True)
    if ws.is_chief:
        atomic.write_json(path, record)
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
        compile_model(config, qmodel, config.uniq_learning_rate, _steps(train, epochs),
                      _steps(train, config.final_epochs))
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
            atomic.write_json(start_path, {"accuracy_before_uniq": before})
    if config.verbose:
        print(f"UNIQ: W{config.weight_bits}A{config.activation_bits}, {epochs} epochs; "
              f"quantized without training: accuracy {before:.4f}", flush=True)
    log = EpochLog(ws.state("uniq_history.json"), "UNIQ", ws.is_chief, config.verbose)
    best = BestQuantizedModel(ws.out("best_quantized_model.h5"), ws.state("best.json"),
                              schedule, log, ws.is_chief)
    fit_model(qmodel, train, epochs, callbacks=[schedule, log, backup(ws, "uniq"), best],
              verbose=config.verbose, validation_data=test)
    # Evaluate with every quantizer on, whatever state the schedule ended in.
    uniq_tf.set_weight_mode(qmodel, uniq_tf.Mode.QUANTIZED)
    uniq_tf.set_activation_mode(qmodel, uniq_tf.ActMode.QUANTIZED)
    return qmodel, log.history, before, evaluate(qmodel, test), best.best


OUTPUTS = ("float_model.h5", "quantized_model.h5", "best_quantized_model.h5", "history.json",
           "summary.json", "bops.txt")


@contextlib.contextmanager
def precision_policy(config: TrainConfig):
    """Keras's global dtype policy set to ``config.mixed_precision`` (if any) for the block,
    and restored after it: the models are built, trained and saved under it."""
    if not config.mixed_precision:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def run(config: TrainConfig, prepared: tuple | None = None) -> dict:
    """The whole pipeline (module docstring); returns the summary also written to summary.json.

    ``prepared``: what ``prepare(config)`` returned, if the caller already ran the checks
    (inside :func:`precision_policy`, as here). Running it again after the process was killed
    resumes the run (same config required).
    """
    config = apply_preset(config)
    with precision_policy(config):
        return _run(config, prepared)


def _run(config: TrainConfig, prepared: tuple | None) -> dict:
    train, test, info, model, planned, strategy = prepared or prepare(config)
    ws = Workspace.for_strategy(config.output_dir, strategy)
    ws.start(config)
    if config.verbose:
        print(f"tf.distribute: {type(strategy).__name__}, {strategy.num_replicas_in_sync} "
              f"replica(s), global batch {config.batch_size}; this process: {ws.role}",
              flush=True)
    floats = train_float(config, ws, strategy, model, train, test)
    allocation = allocate(config, ws, model, train)
    if allocation is not None:  # the plan sets every kernel layer's bits
        config = dataclasses.replace(config, layer_bits={
            name: tuple(pair) for name, pair in allocation["plan"].items()})

    start = time.perf_counter()
    qmodel, uniq_history, before_accuracy, quantized_accuracy, best = train_uniq(
        config, ws, strategy, model, train, test
    )
    uniq_seconds = time.perf_counter() - start
    save_model(qmodel, ws.out("quantized_model.h5"))
    atomic.write_json(ws.out("history.json"), {"float": floats["history"], "uniq": uniq_history})
    budgets = allocation["report"] if allocation else {}
    report = uniq_tf.summary(qmodel, max_bops=budgets.get("max_bops"),
                             max_weight_bytes=budgets.get("max_weight_bytes"))
    atomic.write_text(ws.out("bops.txt"), report.table() + "\n")

    stages = [int(s) for s in uniq_history.get(STAGE_LOG_KEY, [])]
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        # What the export commands read to see the data as this run did.
        "preprocessing": {"dataset": config.dataset, "image_size": info.input_shape[0],
                          "normalization": normalization(config)},
        "float_accuracy": floats["accuracy"],
        "quantized_accuracy_before_uniq": before_accuracy,
        "quantized_accuracy": quantized_accuracy,
        "best": best,
        "weight_bits": config.weight_bits,
        "activation_bits": config.activation_bits,
        "layer_bits": {k: list(v) for k, v in parse_layer_bits(config.layer_bits).items()},
        "skip_layers": list(parse_names(config.skip_layers)),
        "stages": planned,
        "allocation": allocation and allocation["report"],
        "epochs": {
            "float": config.float_epochs,
            "warmup": config.warmup_epochs,
            "per_stage": config.epochs_per_stage,
            "first_stage": config.first_stage_epochs or config.epochs_per_stage,
            "polish": config.polish_epochs,
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
    atomic.write_json(ws.out("summary.json"), summary)
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
