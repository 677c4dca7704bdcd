"""CIFAR-10 ResNet-20 at 4-bit weights and 8-bit activations, then both exports.

    python examples/cifar10_resnet20.py --data_dir=DATA --output_dir=outputs/resnet20

Trains ResNet-20 in float on CIFAR-10 (tensorflow-datasets, prepared in --data_dir: nothing is
downloaded), quantizes it with UNIQ (k-quantile codebooks, uniform noise in the CDF domain,
8-bit activations), fine-tunes it with the staged schedule (blocks of layers, each trained with
noise, then its hard codebook, then frozen), and writes:

- ``float.tflite`` and ``int8.tflite``, each checked in LiteRT against the Keras model;
- ``finn_bundle/``, the FPGA bundle (QONNX for FINN), its input quantizer taken from the
  training images and its check run on the test images.

Only the public API: ``uniq_tf``, ``tflite_export`` and ``fpga_export``. The defaults are a
short run; the paper-scale one is ``--float_epochs=160 --epochs_per_stage=4``.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

import fpga_export
import tflite_export
import uniq_tf  # (each of the three sets up Keras 2 before TensorFlow loads)

keras = uniq_tf.keras
FLAGS = flags.FLAGS


def images(dataset, count: int) -> np.ndarray:
    """The first ``count`` images of a batched (images, labels) dataset, as one array."""
    taken = [x.numpy() for x, _ in dataset.take(-(-count // 32))]
    return np.concatenate(taken)[:count]


def run(data_dir: str | None, output_dir: str, image_size: int = 32, batch_size: int = 128,
        float_epochs: int = 30, stages: int = 4, epochs_per_stage: int = 2,
        final_epochs: int = 2, max_steps_per_epoch: int = 0,
        export_samples: int = 512) -> dict:
    """The whole example (module docstring); returns the accuracies and the export reports."""
    common = {"data_dir": data_dir, "image_size": image_size, "normalization": "imagenet"}
    train, info = uniq_tf.data.get_dataset("cifar10", "train", batch_size=batch_size,
                                           augment=True, **common)
    test, _ = uniq_tf.data.get_dataset("cifar10", "test", batch_size=batch_size, **common)
    if max_steps_per_epoch:
        train = train.take(max_steps_per_epoch)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model = uniq_tf.models.resnet20(info.input_shape, info.num_classes)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss, metrics=["accuracy"])
    model.fit(train, epochs=float_epochs, verbose=2)
    float_accuracy = model.evaluate(test, verbose=0)[1]

    quantized = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
    uniq_tf.calibrate_activations(quantized, train, steps=10, verbose=False)
    schedule = uniq_tf.GradualQuantization(stages, epochs_per_stage=epochs_per_stage,
                                           final_epochs=final_epochs)
    quantized.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss, metrics=["accuracy"])
    quantized.fit(train, epochs=schedule.total_epochs(quantized), callbacks=[schedule],
                  verbose=2)
    uniq_tf.set_weight_mode(quantized, uniq_tf.Mode.QUANTIZED)
    uniq_tf.set_activation_mode(quantized, uniq_tf.ActMode.QUANTIZED)
    quantized_accuracy = quantized.evaluate(test, verbose=0)[1]
    print(uniq_tf.summary(quantized))

    os.makedirs(output_dir, exist_ok=True)
    x_train = images(train, export_samples)
    x_test = images(test, export_samples)
    reports = {
        "float": tflite_export.export_tflite(
            quantized, os.path.join(output_dir, "float.tflite"), samples=x_test),
        "int8": tflite_export.export_tflite(
            quantized, os.path.join(output_dir, "int8.tflite"), "int8", x_train,
            samples=x_test),
    }
    bundle = fpga_export.export_finn(quantized, os.path.join(output_dir, "finn_bundle"),
                                     data=x_train, check_data=x_test, overwrite=True)
    for report in reports.values():
        print(report.summary())
    print(f"float {float_accuracy:.4f}, UNIQ W4A8 {quantized_accuracy:.4f}; "
          f"outputs in {os.path.abspath(output_dir)}")
    return {"float_accuracy": float_accuracy, "quantized_accuracy": quantized_accuracy,
            "tflite": reports, "finn": bundle.descriptor}


def define_flags() -> None:
    """The example's flags (defined when it runs as a script)."""
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir holding cifar10.")
    flags.DEFINE_string("output_dir", "outputs/cifar10_resnet20", "Where the exports go.")
    flags.DEFINE_integer("image_size", 32, "Square input size.")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_integer("float_epochs", 30, "Float training epochs.")
    flags.DEFINE_integer("stages", 4, "UNIQ stages (blocks of consecutive kernel layers).")
    flags.DEFINE_integer("epochs_per_stage", 2, "Epochs per UNIQ stage.")
    flags.DEFINE_integer("final_epochs", 2, "Epochs after the last stage.")
    flags.DEFINE_integer("max_steps_per_epoch", 0, "Steps per epoch (0: whole epochs).")
    flags.DEFINE_integer("export_samples", 512, "Images that calibrate and check the exports.")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(FLAGS.data_dir, FLAGS.output_dir, FLAGS.image_size, FLAGS.batch_size,
        FLAGS.float_epochs, FLAGS.stages, FLAGS.epochs_per_stage, FLAGS.final_epochs,
        FLAGS.max_steps_per_epoch, FLAGS.export_samples)


if __name__ == "__main__":
    define_flags()
    app.run(main)
