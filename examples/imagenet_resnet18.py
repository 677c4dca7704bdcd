"""ImageNet ResNet-18 with the reference recipe, its bits allocated under a BOPs budget.

    python examples/imagenet_resnet18.py --data_dir=DATA --weights=resnet18_float.h5 \\
        --max_bops=0.05 --output_dir=outputs/resnet18

Starts from a float ResNet-18 (``--weights``, or ``--float_epochs`` of training), lets
``uniq_tf.allocate_bits`` choose each layer's weight and activation bits within ``--max_bops``
(a fraction of the float model's BOPs) from their measured sensitivity, quantizes with that
plan, and fine-tunes with the reference code's recipe (docs/method.md): SGD with momentum 0.9
and weight decay, one stage per kernel layer, the first stage twice as long, a constant rate
that drops 10x for the final epochs. ImageNet comes from tensorflow-datasets, prepared in
``--data_dir`` (registration needed; nothing is downloaded), with the usual random resized
crop for training and the center crop for evaluation.

Only the public API (``uniq_tf``). On one CPU this takes weeks; docs/scaling.md plans it on
GPUs (``--strategy`` of ``uniq-train`` runs the same recipe distributed).
"""

from __future__ import annotations

import os

from absl import app, flags

import uniq_tf

keras = uniq_tf.keras
FLAGS = flags.FLAGS


def reference_optimizer(rate: float, steps_per_epoch: int, epochs: int, final_epochs: int):
    """The reference code's recipe: SGD, momentum 0.9, weight decay 5e-4 on the kernels, a
    constant rate that drops 10x for the final epochs."""
    boundary = steps_per_epoch * (epochs - final_epochs)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([boundary], [rate, rate / 10])
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-4)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def run(data_dir: str | None, output_dir: str, weights: str | None = None,
        image_size: int = 224, batch_size: int = 256, float_epochs: int = 0,
        max_bops: float = 0.05, epochs_per_stage: int = 1, final_epochs: int = 4,
        learning_rate: float = 0.01, max_steps_per_epoch: int = 0) -> dict:
    """The whole example (module docstring); returns the plan, its report, the accuracy and the
    quantized model."""
    common = {"data_dir": data_dir, "image_size": image_size, "batch_size": batch_size}
    train, info = uniq_tf.data.get_dataset("imagenet2012", "train", augment=True, **common)
    test, _ = uniq_tf.data.get_dataset("imagenet2012", "test", **common)
    if max_steps_per_epoch:
        train = train.take(max_steps_per_epoch)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = uniq_tf.models.resnet18(info.input_shape, info.num_classes)
    if weights:
        model.load_weights(weights)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss, metrics=["accuracy"])
    if float_epochs:
        model.fit(train, epochs=float_epochs, verbose=2)

    budget = max_bops * uniq_tf.summary(model).total_bops
    plan, report = uniq_tf.allocate_bits(model, train, max_bops=budget)
    print(report)
    quantized = uniq_tf.quantize_model(model, layer_bits=plan)
    uniq_tf.calibrate_activations(quantized, train, steps=10, verbose=False)
    schedule = uniq_tf.GradualQuantization(
        "layer", epochs_per_stage=epochs_per_stage, first_stage_epochs=2 * epochs_per_stage,
        final_epochs=final_epochs)
    epochs = schedule.total_epochs(quantized)
    steps = int(train.cardinality())
    quantized.compile(reference_optimizer(learning_rate, steps, epochs, final_epochs), loss,
                      metrics=["accuracy"])
    quantized.fit(train, epochs=epochs, callbacks=[schedule], verbose=2)
    uniq_tf.set_weight_mode(quantized, uniq_tf.Mode.QUANTIZED)
    uniq_tf.set_activation_mode(quantized, uniq_tf.ActMode.QUANTIZED)
    accuracy = quantized.evaluate(test, verbose=0)[1]
    print(uniq_tf.summary(quantized, max_bops=budget))
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "quantized_model.h5")
    uniq_tf.saving.save_quantized(quantized, path)
    print(f"UNIQ ResNet-18 within {max_bops:g} of the float BOPs: top-1 {accuracy:.4f}; {path}")
    return {"plan": plan, "report": report, "accuracy": accuracy, "budget": budget,
            "model": path, "quantized": quantized}


def define_flags() -> None:
    """The example's flags (defined when it runs as a script)."""
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir holding imagenet2012.")
    flags.DEFINE_string("output_dir", "outputs/imagenet_resnet18", "Where the model goes.")
    flags.DEFINE_string("weights", None, "Float ResNet-18 weights (.h5); None trains from scratch.")
    flags.DEFINE_integer("image_size", 224, "Square input size.")
    flags.DEFINE_integer("batch_size", 256, "Batch size.")
    flags.DEFINE_integer("float_epochs", 0, "Float training epochs before quantizing.")
    flags.DEFINE_float("max_bops", 0.05, "BOPs budget, a fraction of the float model's.")
    flags.DEFINE_integer("epochs_per_stage", 1, "Epochs per UNIQ stage (one kernel layer each).")
    flags.DEFINE_integer("final_epochs", 4, "Epochs after the last stage, at a tenth of the rate.")
    flags.DEFINE_float("learning_rate", 0.01, "The fine-tune's learning rate.")
    flags.DEFINE_integer("max_steps_per_epoch", 0, "Steps per epoch (0: whole epochs).")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(FLAGS.data_dir, FLAGS.output_dir, FLAGS.weights, FLAGS.image_size, FLAGS.batch_size,
        FLAGS.float_epochs, FLAGS.max_bops, FLAGS.epochs_per_stage, FLAGS.final_epochs,
        FLAGS.learning_rate, FLAGS.max_steps_per_epoch)


if __name__ == "__main__":
    define_flags()
    app.run(main)
