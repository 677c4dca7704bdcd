"""Data sets for the examples and benchmarks, as batched tf.data pipelines.

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), the one real image data set
  available offline; stratified train/test split.
- ``cifar10``, ``imagenette`` (tfds config ``320px-v2`` unless named, e.g.
  ``imagenette/160px-v2``) and ``imagenet2012`` (manual download) from tensorflow-datasets,
  read from ``data_dir``. Nothing is ever downloaded: a data_dir without the prepared data is a
  ValueError that says how to prepare it.

Preprocessing (images as float32 in [0, 1], then ``normalization``):
    digits:     train augment = random shift by up to 1 pixel (zero-pad 1, random 8x8 crop)
    cifar10:    train augment = random shift by up to size/8 pixels + horizontal flip
    ImageNet-style (imagenette, imagenet2012):
        train augment = random resized crop (area 8%-100%, aspect 3/4-4/3) + horizontal flip
        evaluation    = resize shorter side to size/0.875, center crop size x size
Flips and random resized crops are keras-cv layers inside the tf.data pipeline (keras-cv 0.9
runs on tf_keras when TF_USE_LEGACY_KERAS=1, which importing uniq_tf sets); shifts are exact
per-image crops (see ``_random_shift``). Given ``seed``, the digits and cifar10 pipelines repeat
exactly from run to run (and change from epoch to epoch); the ImageNet-style random resized
crop runs in parallel and does not repeat exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from uniq_tf._keras import tf

AUTOTUNE = tf.data.AUTOTUNE
EVAL_CROP_FRACTION = 0.875  # 224 / 256, the usual ImageNet center-crop ratio
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
NORMALIZATIONS = ("unit", "imagenet", "tf", "caffe")
_SHUFFLE_BUFFER = 10_000


@dataclass(frozen=True)
class DatasetInfo:
    """What a model builder and a training loop need to know about a pipeline."""

    name: str
    split: str
    num_classes: int
    input_shape: tuple[int, int, int]
    num_examples: int | None


@dataclass(frozen=True)
class _TfdsSpec:
    tfds_name: str
    splits: dict[str, str]  # our "train"/"test" -> the tfds split
    image_size: int  # default square size fed to the model
    style: str  # "cifar" or "imagenet" preprocessing
    how_to_prepare: str


_TFDS_BUILD = (
    "On a machine with internet access run `tfds build {name} --data_dir=DATA_DIR` "
    "(tensorflow-datasets' CLI), copy DATA_DIR here and pass it as data_dir."
)
TFDS_DATASETS = {
    "cifar10": _TfdsSpec(
        "cifar10", {"train": "train", "test": "test"}, 32, "cifar",
        _TFDS_BUILD.format(name="cifar10"),
    ),
    "imagenette": _TfdsSpec(
        "imagenette/320px-v2", {"train": "train", "test": "validation"}, 224, "imagenet",
        _TFDS_BUILD.format(name="imagenette/320px-v2"),
    ),
    "imagenet2012": _TfdsSpec(
        "imagenet2012", {"train": "train", "test": "validation"}, 224, "imagenet",
        "ImageNet cannot be downloaded by tensorflow-datasets (registration needed). Put "
        "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in a folder MANUAL_DIR (tfds' "
        "manual_dir; by default DATA_DIR/downloads/manual) and prepare it once with "
        "`tfds build imagenet2012 --data_dir=DATA_DIR --manual_dir=MANUAL_DIR`, "
        "then pass DATA_DIR as data_dir.",
    ),
}
DATASETS = ("digits", *TFDS_DATASETS)


def load_digits(test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's bundled digits (1,797 8x8 images; no download), split for training.

    Args:
        test_fraction: the share of images in the test split, in (0, 1).
        seed: fixes the stratified split (seed 0 = the tests' digits fixture).

    Returns:
        (x_train, y_train, x_test, y_test): x (N, 8, 8, 1) float32 in [0, 1] (pixel counts
        0..16 divided by 16); y int32 labels 0..9.

    Raises:
        ValueError: ``test_fraction`` is outside (0, 1).
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    data = sklearn_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return x_tr, y_tr, x_te, y_te


def normalize(images: tf.Tensor, normalization: str) -> tf.Tensor:
    """Maps RGB images in [0, 1] to what a model's weights expect:
    unit: x; imagenet: (x - mean) / std (torchvision); tf: 2x - 1 (Keras MobileNet);
    caffe: 255 x in BGR order minus the BGR mean (Keras ResNet50)."""
    if normalization == "unit":
        return images
    if normalization == "imagenet":
        return (images - _IMAGENET_MEAN) / _IMAGENET_STD
    if normalization == "tf":
        return images * 2.0 - 1.0
    if normalization == "caffe":
        return images[..., ::-1] * 255.0 - _CAFFE_BGR_MEAN
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _random_shift(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Random translation by up to size/8 pixels: zero-pad, then a random size x size crop.

    Per image with a stateless crop (``seed``: 2 integers from ``_with_seeds``): keras-cv's
    RandomCrop samples its window with crop_and_resize on a slightly stretched grid, so its
    crops skip or repeat pixels, and a stateful random op inside a parallel map draws its
    numbers in thread order, so runs would not repeat.
    """
    pad = max(size // 8, 1)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, (size, size, image.shape[-1]), seed=seed)


def _with_seeds(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Pairs every element with its own stateless seed: the same for a given ``seed`` in every
    run, new in every epoch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds))


def _keras_cv_seed(seed: int) -> int:
    """keras-cv 0.9 layers test ``if seed:``, so seed 0 would mean "unseeded"; shift by one."""
    return seed + 1


def _random_flip(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """keras-cv's RandomFlip on batches. Sequential map: the layer draws from a stateful
    generator, whose numbers follow the order of the calls."""
    import keras_cv

    flip = keras_cv.layers.RandomFlip("horizontal", seed=_keras_cv_seed(seed))
    return ds.map(lambda images, labels: (flip(images, training=True), labels))


def _center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize the shorter side to size/0.875 (keeping the aspect ratio), crop the center."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / EVAL_CROP_FRACTION) / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    return tf.image.resize_with_crop_or_pad(resized, size, size)


def _check_args(batch_size, image_size, normalization) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _check_split(name: str, split: str, allowed) -> None:
    if split not in allowed:
        raise ValueError(f"Unknown split {split!r} for data set {name!r}; allowed: {list(allowed)}")


def get_dataset(
    name: str,
    split: str,
    data_dir: str | None = None,
    batch_size: int = 128,
    image_size: int | None = None,
    augment: bool = False,
    shuffle: bool | None = None,
    seed: int = 0,
    normalization: str = "imagenet",
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """A batched (images, labels) pipeline of ``split`` ("train" or "test") and its info.

    Args:
        name: "digits", "cifar10", "imagenette" (or "imagenette/<tfds config>"), "imagenet2012".
        data_dir: tensorflow-datasets' data_dir holding the prepared data (None = tfds'
            default, ~/tensorflow_datasets). Ignored for digits.
        image_size: square input size (default: 8 digits, 32 cifar10, 224 ImageNet-style).
        augment: random crops (and flips, except digits) for training; see the module doc.
        shuffle: shuffle examples every epoch (default: True for "train").
        normalization: one of NORMALIZATIONS for the RGB data sets; digits stay in [0, 1].
        batch_size: examples per batch.
        seed: fixes shuffling and augmentation (see the module doc for what repeats exactly).

    Returns:
        (dataset, info): batches of (images, labels), and a :class:`DatasetInfo` (classes,
        input shape, number of examples).

    Raises:
        ValueError: unknown name or split, bad arguments, or data_dir without the data.
    """
    _check_args(batch_size, image_size, normalization)
    base = name.split("/")[0]
    if base not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; allowed: {list(DATASETS)}")
    shuffle = split == "train" if shuffle is None else shuffle
    if base == "digits":
        if name != "digits":
            raise ValueError(f"digits has no configs, got {name!r}")
        return _digits(split, batch_size, image_size, augment, shuffle, seed)
    return _tfds(
        name, split, data_dir, batch_size, image_size, augment, shuffle, seed, normalization
    )


def _digits(split, batch_size, image_size, augment, shuffle, seed):
    _check_split("digits", split, ("train", "test"))
    x_tr, y_tr, x_te, y_te = load_digits()
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    size = image_size or 8
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if size != 8:
        ds = ds.map(lambda im, lab: (tf.image.resize(im, (size, size)), lab))
    if augment:
        shift = lambda example, s: (_random_shift(example[0], size, s), example[1])
        ds = _with_seeds(ds, seed).map(shift, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size)
    info = DatasetInfo("digits", split, 10, (size, size, 1), len(x))
    return ds.prefetch(AUTOTUNE), info


def _load_tfds(name: str, spec: _TfdsSpec, split: str, data_dir, shuffle: bool, seed: int):
    """Reads the prepared tfds data (never downloads); encoded images, decoded later so that
    shuffling holds small strings. Returns (dataset, builder)."""
    import tensorflow_datasets as tfds

    tfds_name = spec.tfds_name if "/" not in name else name
    builder = tfds.builder(tfds_name, data_dir=data_dir)  # ValueError for an unknown config
    try:
        ds = builder.as_dataset(
            split=spec.splits[split],
            as_supervised=True,
            shuffle_files=shuffle,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
    except AssertionError as error:  # tfds' "could not find data in <data_dir>"
        raise ValueError(
            f"No prepared {tfds_name!r} data in data_dir={str(builder.data_dir_root)!r} "
            f"(looked for {builder.data_dir!r}). {spec.how_to_prepare}"
        ) from error
    return ds, builder


def _tfds(name, split, data_dir, batch_size, image_size, augment, shuffle, seed, normalization):
    spec = TFDS_DATASETS[name.split("/")[0]]
    _check_split(name, split, spec.splits)
    ds, builder = _load_tfds(name, spec, split, data_dir, shuffle, seed)
    num_examples = int(ds.cardinality())
    size = image_size or spec.image_size
    image_feature = builder.info.features["image"]

    def decode(encoded):
        return tf.cast(image_feature.decode_example(encoded), tf.float32) / 255.0

    if shuffle:
        ds = ds.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if spec.style == "imagenet" and augment:
        import keras_cv

        crop = keras_cv.layers.RandomCropAndResize(
            (size, size), crop_area_factor=(0.08, 1.0), aspect_ratio_factor=(3 / 4, 4 / 3),
            seed=_keras_cv_seed(seed),
        )
        # Parallel for speed (the decode and crop of large images dominate), so these crops
        # are not repeatable from run to run.
        per_image = lambda im, _: crop(im, training=True)
    elif spec.style == "imagenet":
        per_image = lambda im, _: _center_crop(im, size)
    elif augment:
        per_image = lambda im, s: _random_shift(tf.image.resize(im, (size, size)), size, s)
    else:
        per_image = lambda im, _: tf.image.resize(im, (size, size))

    def prepare(example, image_seed):
        encoded, label = example
        image = per_image(decode(encoded), image_seed)
        return tf.ensure_shape(image, (size, size, 3)), label

    ds = _with_seeds(ds, seed).map(prepare, num_parallel_calls=AUTOTUNE).batch(batch_size)
    if augment:
        ds = _random_flip(ds, seed)
    ds = ds.map(lambda im, lab: (normalize(im, normalization), lab), num_parallel_calls=AUTOTUNE)
    num_classes = builder.info.features["label"].num_classes
    info = DatasetInfo(
        name, split, num_classes, (size, size, 3), num_examples if num_examples >= 0 else None
    )
    return ds.prefetch(AUTOTUNE), info
