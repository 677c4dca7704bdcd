"""The low-bit suite's data and models (bench/lowbit.py): folds, shifted test sets, the two
narrow models and their float training.

Seed s trains on four folds of a stratified 5-fold split of all 1,797 digits and tests on fold
s % 5 (:func:`folds`); each test image is evaluated at its 9 one-pixel shifts (:data:`SHIFTS`,
the shifts training augments with). Every method of a seed starts from the same float model
(:func:`float_model`, trained once per model and seed and saved) and sees the same data order
(:func:`train_dataset`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import common
from uniq_tf._keras import keras, tf
from uniq_tf.util import atomic

FOLDS = 5
SHIFTS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def folds(seed: int, validation: bool = False):
    """(x_train, y_train, x_test, y_test) of fold ``seed``: all 1,797 digits in [0, 1],
    (N, 8, 8, 1). ``validation``: the test part is a stratified fifth of the training folds
    instead (for the learning-rate sweep), and the training part the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = digits.target.astype(np.int32)
    splits = list(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, y))
    train, test = splits[seed % FOLDS]
    if validation:
        inner = StratifiedKFold(FOLDS, shuffle=True, random_state=1).split(x[train], y[train])
        fit, held = next(iter(inner))
        train, test = train[fit], train[held]
    return x[train], y[train], x[test], y[test]


def shifted(images: np.ndarray) -> np.ndarray:
    """Every image at each of the 9 one-pixel shifts (zero fill), shift-major."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = images.shape[1:3]
    return np.concatenate([padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                           for dy, dx in SHIFTS])


def train_dataset(x, y, seed: int, batch_size: int = 64) -> tf.data.Dataset:
    """Shuffled (order fixed by ``seed``) and shifted by up to one pixel, from per-example
    stateless seeds: the same ``seed`` gives the same batches in every run and method."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    ds = ds.enumerate()

    def shift(index, example):
        image, label = example
        padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
        crop = tf.image.stateless_random_crop(padded, tf.shape(image),
                                              seed=tf.stack([tf.cast(seed, tf.int64), index]))
        return crop, label

    return ds.map(shift).batch(batch_size)


def test_dataset(x, y, batch_size: int = 512) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(
        (shifted(x), np.tile(y, len(SHIFTS)))).batch(batch_size)


def tiny_cnn(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """Two narrow convolutions (6 and 12 filters) and a dense classifier: 3 kernel layers."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, (filters, stride) in enumerate(((6, 1), (12, 2)), start=1):
        x = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="fc")(x), name="tiny_cnn")


def narrow_resnet(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """A residual net of width 8-16 (stem, two basic blocks, the second with a projection),
    global pooling: 7 kernel layers."""

    def conv_bn(x, filters, stride, name, relu=True):
        x = keras.layers.Conv2D(filters, 3 if "proj" not in name else 1, stride,
                                padding="same", use_bias=False, name=name)(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input(input_shape)
    x = conv_bn(inputs, 8, 1, "stem")
    for name, filters, stride in (("block1", 8, 1), ("block2", 16, 2)):
        y = conv_bn(x, filters, stride, f"{name}_conv1")
        y = conv_bn(y, filters, 1, f"{name}_conv2", relu=False)
        if stride != 1:
            x = conv_bn(x, filters, stride, f"{name}_proj", relu=False)
        x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="narrow_resnet")


MODELS = {"tiny_cnn": tiny_cnn, "narrow_resnet": narrow_resnet}
FLOAT_EPOCHS = 30


def compile_model(model, optimizer) -> None:
    """Cross-entropy on logits and accuracy: what every run of the suite compiles."""
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def evaluate(model, test) -> dict:
    """Test accuracy and cross-entropy."""
    result = model.evaluate(test, verbose=0, return_dict=True)
    return {"accuracy": float(result["accuracy"]), "cross_entropy": float(result["loss"])}


def train_float(name: str, seed: int, epochs: int, validation: bool = False,
                models: dict = MODELS):
    """The float model ``models[name]`` trained on fold ``seed`` (Adam, cosine from 3e-3)."""
    common.set_seed(seed)
    x, y, xt, yt = folds(seed, validation)
    train = train_dataset(x, y, seed)
    model = models[name]()
    steps = int(np.ceil(len(x) / 64))
    compile_model(model, keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(3e-3, steps * epochs)))
    model.fit(train, epochs=epochs, verbose=0)
    return model, evaluate(model, test_dataset(xt, yt))


def float_model(name: str, seed: int, float_dir: str, epochs: int, validation: bool = False,
                models: dict = MODELS):
    """The float model of (``name``, ``seed``), trained once and saved under ``float_dir``."""
    path = Path(float_dir, f"{name}_seed{seed}{'_val' if validation else ''}")
    if not path.with_suffix(".json").exists():
        model, metrics = train_float(name, seed, epochs, validation, models)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path.with_suffix(".h5")) as temp:
            model.save(temp, save_format="h5")
        common.write_json(str(path.with_suffix(".json")), metrics)
    model = keras.models.load_model(str(path.with_suffix(".h5")), compile=False)
    return model, json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
