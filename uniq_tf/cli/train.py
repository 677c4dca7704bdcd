"""Train a float model, then quantize it with UNIQ's stage-wise schedule, and save both.

    uniq-train                   # small_cnn on digits, W4A8, < 1 min
    uniq-train --weight_bits=2
    uniq-train --max_bops=0.03   # per-layer bits within 3 % of float BOPs
    uniq-train --model=resnet20 --dataset=cifar10 --data_dir=DATA \\
        --float_epochs=160 --optimizer=sgd --learning_rate=0.1 --weight_decay=1e-4 \\
        --epochs_per_stage=2 --uniq_learning_rate=0.01 --batch_size=128
    uniq-train --strategy=mirrored   # every local GPU (or CPU device)
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        uniq-train --strategy=multi_worker   # one per worker

Steps (schedule: uniq_tf/schedule/gradual.py, docs/method.md): load the data; train the float model
(or load ``--pretrained``); evaluate it; ``uniq_tf.quantize_model``; calibrate the activation
ranges on a few training batches; fine-tune with ``uniq_tf.GradualQuantization``
(warm-up, one stage per layer or block, final epochs); evaluate with every quantizer on. With a
budget (``--max_bops``, ``--max_weight_kb``), ``uniq_tf.allocate_bits`` chooses each layer's bits on
the trained float model before quantizing (summary.json's "allocation"; bops.txt ends with the
budget line). ``--output_dir``
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
Every file is written to a temporary name and renamed (uniq_tf.atomic): no partial files.

``run(TrainConfig(...))`` does the same in-process and returns the summary (tests, benchmarks);
the pieces live in ``uniq_tf/training/`` and are importable from here.
"""

from __future__ import annotations

import dataclasses

from uniq_tf.method.settings import DISTRIBUTIONS, NOISE_MODELS
from uniq_tf.training.config import (
    LR_SCHEDULES,
    OPTIMIZERS,
    PRECISION_POLICIES,
    PRESETS,
    STRATEGIES,
    TrainConfig,
    validate_config,
)
from uniq_tf.training.pipeline import OUTPUTS, precision_policy, prepare, run
from uniq_tf.training.resume import (
    BestQuantizedModel,
    EpochLog,
    Workspace,
    check_resumable,
)
from uniq_tf.training.strategy import make_strategy, parse_tf_config
from uniq_tf.zoo import data, models

# absl prints the docstring and every flag before an app.UsageError; a bad value gets one line.
USAGE_HINT = " (pass --helpshort to see the flags)"

# What callers (tests, benchmarks) import from here.
__all__ = [
    "OUTPUTS", "BestQuantizedModel", "EpochLog", "TrainConfig", "Workspace", "check_resumable",
    "make_strategy", "parse_tf_config", "prepare", "run", "validate_config",
]


def _define_flags():
    from absl import flags

    d = TrainConfig()
    flags.DEFINE_enum("model", d.model, sorted(models.MODELS), "Model to train.")
    flags.DEFINE_string("dataset", d.dataset, f"One of {list(data.DATASETS)} "
                        "(imagenette/<tfds config> also works).")
    flags.DEFINE_string("data_dir", d.data_dir, "tensorflow-datasets data_dir with the prepared "
                        "data (nothing is downloaded).")
    flags.DEFINE_integer("image_size", d.image_size, "Square input size (default per data set).")
    flags.DEFINE_string("normalization", d.normalization, f"One of {list(data.NORMALIZATIONS)} "
                        "for RGB data sets (unit: [0, 1], tf: [-1, 1], imagenet: (x - mean) / "
                        "std, caffe); empty: the model's own.")
    flags.DEFINE_bool("augment", d.augment, "Random crops/flips while training.")
    flags.DEFINE_integer("weight_bits", d.weight_bits, "Codebook index width b (2^b levels).")
    flags.DEFINE_integer("activation_bits", d.activation_bits, "Activation bits.")
    flags.DEFINE_string("layer_bits", d.layer_bits, 'Per-layer bits, e.g. "conv1=8:8,fc=8:8".')
    flags.DEFINE_string("skip_layers", d.skip_layers, "Comma-separated layers to keep float.")
    flags.DEFINE_bool("per_channel", d.per_channel, "Per-output-channel codebooks.")
    flags.DEFINE_enum("distribution", d.distribution, list(DISTRIBUTIONS), "Fitted CDF.")
    flags.DEFINE_bool("high_noise", d.high_noise, "Noise of +-1/k instead of +-1/(2k).")
    flags.DEFINE_enum("noise", d.noise, list(NOISE_MODELS), "Training noise model "
                      "(docs/method.md, Noise models); paper = the paper's noise.")
    flags.DEFINE_integer("grid_bits", d.grid_bits, "Train every codebook on a B-bit integer "
                         "grid (0: none), so the FPGA export keeps B bits and matches the model "
                         "(docs/method.md, 'Integer grid for FPGAs').")
    flags.DEFINE_string("stages", str(d.stages), '"layer", a number of stages, or explicit '
                        'groups "conv1,conv2;fc".')
    flags.DEFINE_integer("float_epochs", d.float_epochs, "Float training epochs.")
    flags.DEFINE_integer("warmup_epochs", d.warmup_epochs, "UNIQ warm-up epochs (all float).")
    flags.DEFINE_integer("epochs_per_stage", d.epochs_per_stage, "Epochs per UNIQ stage.")
    flags.DEFINE_integer("final_epochs", d.final_epochs, "Epochs after the last stage.")
    flags.DEFINE_integer("first_stage_epochs", d.first_stage_epochs, "Epochs of the first "
                         "stage (0: epochs_per_stage).")
    flags.DEFINE_integer("polish_epochs", d.polish_epochs, "Last epochs of each stage trained "
                         "hard with a straight-through gradient instead of noise (default: 1 in "
                         "stages of 2+ epochs; 0 with --noise=paper: the paper exactly).")
    flags.DEFINE_enum("preset", d.preset, list(PRESETS), 'Recipe: "reference" = SGD momentum '
                      "0.9, weight decay 5e-4, step rate, first stage 2x (overrides those flags).")
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
    flags.DEFINE_enum("mixed_precision", d.mixed_precision, list(PRECISION_POLICIES),
                      "Keras dtype policy for the whole run (codebooks stay float32); empty: "
                      "float32.")
    flags.DEFINE_bool("jit_compile", d.jit_compile, "Compile train steps with XLA.")
    flags.DEFINE_enum("strategy", d.strategy, list(STRATEGIES), "tf.distribute strategy: "
                      "default (one device), mirrored (all local devices), multi_worker "
                      "(MultiWorkerMirroredStrategy; reads TF_CONFIG).")
    flags.DEFINE_string("output_dir", d.output_dir, "Where the outputs go (and the backups that "
                        "let a killed run resume when the same command runs again).")
    flags.DEFINE_integer("verbose", d.verbose, "0 silent, 1 progress bars.")
    flags.DEFINE_float("max_bops", d.max_bops, "BOPs budget (0: none; <= 1: a fraction of the "
                       "float model's): per-layer bits chosen by uniq_tf.allocate_bits after "
                       "the float phase replace --weight_bits/--activation_bits.")
    flags.DEFINE_float("max_weight_kb", d.max_weight_kb, "Weight memory budget in kB of 1000 "
                       "bytes (0: none; <= 1: a fraction of the float model's).")
    flags.DEFINE_string("allocation_weight_bits", d.allocation_weight_bits, "Candidate weight "
                        "bits of the budget's allocation.")
    flags.DEFINE_string("allocation_activation_bits", d.allocation_activation_bits, "Candidate "
                        "activation bits of the budget's allocation.")
    flags.DEFINE_integer("allocation_batches", d.allocation_batches, "Training batches the "
                         "allocation measures each layer's sensitivity on.")
    return flags.FLAGS


def main(argv) -> None:
    from absl import flags, logging

    # TensorFlow logs an INFO line per checkpoint, which would break the progress bars.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {argv[1:]}{USAGE_HINT}")
    values = {f.name: getattr(flags.FLAGS, f.name) for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**values)
    with precision_policy(config):
        try:
            prepared = prepare(config)
        except ValueError as error:  # a bad flag, found before any training
            raise SystemExit(f"{error}{USAGE_HINT}") from error
        run(config, prepared)


def console() -> None:
    """The ``uniq-train`` command."""
    from uniq_tf.cli import run_command

    run_command(__name__, _define_flags, main)


if __name__ == "__main__":
    console()
