"""The settings of a training run (:class:`TrainConfig`), their parsers, and the checks that
need neither data nor a model (uniq-train's flags mirror the fields)."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence

from uniq_tf.method.settings import (
    ACTIVATION_BITS_RANGE,
    DEFAULTS,
    DISTRIBUTIONS,
    NOISE_MODELS,
    WEIGHT_BITS_RANGE,
    check_activation_bits,
    check_weight_bits,
)
from uniq_tf.schedule.gradual import DEFAULT_EPOCHS_PER_STAGE, DEFAULT_FINAL_EPOCHS
from uniq_tf.training.strategy import parse_tf_config
from uniq_tf.util import checks
from uniq_tf.zoo import data, models

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine", "step")
PRESETS = ("", "reference")
PRECISION_POLICIES = ("", "mixed_float16", "mixed_bfloat16")
# The reference code's recipe (docs/method.md section 3), scaled to a fine-tune: SGD with
# momentum and weight decay, a first stage twice as long, a constant rate that drops 10x only
# for the final epochs. Its learning rate is the best of bench/lowbit.py's sweep.
REFERENCE_PRESET = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
                    "lr_schedule": "step", "uniq_learning_rate": 3e-2}
STRATEGIES = ("default", "mirrored", "multi_worker")
APPLICATION_MODELS = ("resnet50", "mobilenet_v1")  # the builders that accept weights="imagenet"


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; the command-line flags mirror these fields and defaults.

    layer_bits: "name=w:a,..." (either side may be empty: "conv1=8:,fc=:8") or a dict
        name -> (w, a). stages: "layer", an int (or its string), "a,b;c,d" (explicit stages of
        kernel layer names), or a list of lists. skip_layers: "a,b" or a sequence of names.
        strategy: one of STRATEGIES; batch_size is the global batch (all replicas together).
        noise: one of uniq_tf.method.settings.NOISE_MODELS. polish_epochs, first_stage_epochs: see
        GradualQuantization (polish_epochs None: its default; first_stage_epochs 0:
        epochs_per_stage). The paper exactly: noise="paper", polish_epochs=0. lr_schedule "step":
        constant, then a tenth for the final epochs. preset "reference": the fields of
        REFERENCE_PRESET and a first stage of 2 x epochs_per_stage, over what is set here.
        normalization: how RGB images in [0, 1] are mapped for the model (one of
        uniq_tf.data.NORMALIZATIONS; "": the model's own, uniq_tf.models.PREPROCESSING, else
        "imagenet"); digits stay in [0, 1]. The run records it for the export commands.
        max_bops, max_weight_kb: a budget (0: none; a value <= 1 is a fraction of the float
        model's): after the float phase, uniq_tf.allocate_bits chooses per-layer bits among
        allocation_weight_bits x allocation_activation_bits ("2,3,4,8") on
        allocation_batches training batches, pinning the layers of layer_bits; the plan
        replaces weight_bits/activation_bits. max_weight_kb counts 1000 bytes.
    """

    model: str = "small_cnn"
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    normalization: str = ""
    augment: bool = True
    weight_bits: int = DEFAULTS.weight_bits
    activation_bits: int = DEFAULTS.activation_bits
    layer_bits: str | dict = ""
    skip_layers: str | Sequence[str] = ""
    per_channel: bool = DEFAULTS.per_channel
    distribution: str = DEFAULTS.distribution
    high_noise: bool = DEFAULTS.high_noise
    noise: str = DEFAULTS.noise
    grid_bits: int = 0
    stages: str | int | list = "layer"
    float_epochs: int = 15
    warmup_epochs: int = 0
    epochs_per_stage: int = DEFAULT_EPOCHS_PER_STAGE
    final_epochs: int = DEFAULT_FINAL_EPOCHS
    first_stage_epochs: int = 0
    polish_epochs: int | None = None
    preset: str = ""
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
    mixed_precision: str = ""
    jit_compile: bool = False
    output_dir: str = "outputs/train"
    verbose: int = 1
    max_bops: float = 0.0
    max_weight_kb: float = 0.0
    allocation_weight_bits: str = "2,3,4,8"
    allocation_activation_bits: str = "4,8"
    allocation_batches: int = 4


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


def parse_bit_list(value: str, field: str) -> tuple[int, ...]:
    """ "2,3,4,8" -> (2, 3, 4, 8)."""
    try:
        widths = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as error:
        raise ValueError(f"{field} must be comma-separated bit widths (e.g. \"2,4,8\"), "
                         f"got {value!r}") from error
    if not widths:
        raise ValueError(f"{field} must list at least one bit width, got {value!r}")
    return widths


def has_budget(config: TrainConfig) -> bool:
    return bool(config.max_bops or config.max_weight_kb)


def _check_budget(config: TrainConfig) -> None:
    for field in ("max_bops", "max_weight_kb"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{field} must be a number >= 0 (0: no budget; <= 1: a fraction "
                             f"of the float model's), got {value!r}")
    _check_int(config, "allocation_batches", 1)
    for field, check in (("allocation_weight_bits", check_weight_bits),
                         ("allocation_activation_bits", check_activation_bits)):
        for bits in parse_bit_list(getattr(config, field), field):
            check(bits, field)
    if has_budget(config) and config.strategy == "multi_worker":
        raise ValueError("max_bops/max_weight_kb with --strategy=multi_worker is not "
                         "supported: each worker would measure sensitivity on its own shard "
                         "and could choose another plan. Allocate once (uniq_tf.allocate_bits) "
                         "and pass the plan as --layer_bits.")


def _check_grid_bits(config: TrainConfig) -> None:
    """``grid_bits`` is 0 (no grid) or a width no codebook of the run is wider than."""
    _check_int(config, "grid_bits", 0, 16)
    if not config.grid_bits:
        return
    widths = [config.weight_bits] + [
        w for w, _ in parse_layer_bits(config.layer_bits).values() if w is not None]
    if has_budget(config):
        widths += parse_bit_list(config.allocation_weight_bits, "allocation_weight_bits")
    widest = max(max(widths), 2)
    if config.grid_bits < widest:
        raise ValueError(
            f"grid_bits must be 0 (no grid) or in {widest}..16: the run has {max(widths)}-bit "
            f"codebooks, which a {config.grid_bits}-bit grid cannot hold; got {config.grid_bits}"
        )


def parse_names(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    return tuple(value)


def apply_preset(config: TrainConfig) -> TrainConfig:
    """``config`` with its preset's settings (unchanged without a preset)."""
    if config.preset != "reference":
        return config
    return dataclasses.replace(
        config, **REFERENCE_PRESET,
        first_stage_epochs=config.first_stage_epochs or 2 * config.epochs_per_stage,
    )


def _check_int(config, field: str, minimum: int, maximum: int | None = None) -> None:
    checks.check_int(getattr(config, field), field, minimum, maximum)


def _check_choice(config, field: str, allowed: Sequence[str]) -> None:
    checks.check_choice(getattr(config, field), field, allowed)


def validate_config(config: TrainConfig) -> None:
    """The checks that need neither data nor a model; ValueError naming the flag."""
    _check_choice(config, "model", sorted(models.MODELS))
    if config.dataset.split("/")[0] not in data.DATASETS:
        raise ValueError(f"dataset must be one of {list(data.DATASETS)} (imagenette/<tfds config> "
                         f"too), got {config.dataset!r}")
    if config.normalization:
        _check_choice(config, "normalization", data.NORMALIZATIONS)
    _check_choice(config, "optimizer", OPTIMIZERS)
    _check_choice(config, "lr_schedule", LR_SCHEDULES)
    _check_choice(config, "distribution", DISTRIBUTIONS)
    _check_choice(config, "noise", NOISE_MODELS)
    _check_choice(config, "preset", PRESETS)
    _check_choice(config, "mixed_precision", PRECISION_POLICIES)
    _check_choice(config, "strategy", STRATEGIES)
    _check_int(config, "weight_bits", *WEIGHT_BITS_RANGE)
    _check_int(config, "activation_bits", *ACTIVATION_BITS_RANGE)
    for field in ("float_epochs", "warmup_epochs", "final_epochs", "max_steps_per_epoch",
                  "calibration_steps", "seed", "first_stage_epochs"):
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
    shortest = min(config.epochs_per_stage, config.first_stage_epochs or config.epochs_per_stage)
    if config.polish_epochs is not None:
        _check_int(config, "polish_epochs", 0)
    if config.polish_epochs is not None and config.polish_epochs >= shortest:
        raise ValueError(
            f"polish_epochs must be less than every stage's length ({shortest}), got "
            f"{config.polish_epochs}"
        )
    parse_layer_bits(config.layer_bits)
    parse_stages(config.stages)
    _check_budget(config)
    _check_grid_bits(config)
    if config.strategy == "multi_worker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
    elif os.environ.get("TF_CONFIG"):
        # Started as one of several workers, each would train alone into the same output_dir.
        warnings.warn(
            f"TF_CONFIG is set but --strategy={config.strategy}: this process trains alone. "
            "Pass --strategy=multi_worker to train with the cluster TF_CONFIG describes.",
            stacklevel=2,
        )


def normalization(config: TrainConfig) -> str:
    """The run's normalization: ``config.normalization``, else the model's own."""
    return config.normalization or models.PREPROCESSING.get(config.model, "imagenet")
