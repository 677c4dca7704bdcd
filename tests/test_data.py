"""Data pipelines: digits, and the real tfds loading code on tfds' mock data (no network)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from uniq_tf import data
from uniq_tf._keras import tf


def test_load_digits_is_the_stratified_split_in_unit_range(digits):
    x_tr, y_tr, x_te, y_te = data.load_digits()
    assert x_tr.shape == (1347, 8, 8, 1) and x_te.shape == (450, 8, 8, 1)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int32
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    # Stratified: every class has the same share (within one image) in both splits.
    np.testing.assert_allclose(np.bincount(y_te) / len(y_te), np.bincount(y_tr) / len(y_tr),
                               atol=2 / len(y_te))
    # Seed 0 is the tests' fixture split.
    for ours, fixture in zip((x_tr, y_tr, x_te, y_te), digits, strict=True):
        np.testing.assert_array_equal(ours, fixture)


def test_digits_pipeline_batches_and_augments_by_shifting():
    plain, info = data.get_dataset("digits", "train", batch_size=32, shuffle=False)
    shifted, _ = data.get_dataset("digits", "train", batch_size=32, shuffle=False, augment=True)
    assert info == data.DatasetInfo("digits", "train", 10, (8, 8, 1), 1347)
    assert int(plain.cardinality()) == 43  # ceil(1347 / 32)
    (x, y), (xa, ya) = next(iter(plain)), next(iter(shifted))
    assert x.shape == xa.shape == (32, 8, 8, 1)
    np.testing.assert_array_equal(y, ya)
    assert float(tf.reduce_min(xa)) >= 0.0 and float(tf.reduce_max(xa)) <= 1.0
    assert not np.array_equal(x.numpy(), xa.numpy())
    # Every augmented image is its original shifted by at most one pixel, zeros shifted in.
    padded = np.pad(x.numpy(), ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifts = [padded[:, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
    matches = [[np.array_equal(s[i], xa[i].numpy()) for s in shifts] for i in range(32)]
    assert all(any(m) for m in matches)
    assert sum(not m[4] for m in matches) > 8  # m[4]: no shift; most images do move
    test, test_info = data.get_dataset("digits", "test", batch_size=450)
    assert test_info.num_examples == 450 and next(iter(test))[0].shape == (450, 8, 8, 1)


@pytest.mark.parametrize(
    "name, classes, image_size, expected_size",
    [("cifar10", 10, None, 32), ("imagenette", 10, 24, 24), ("imagenet2012", 1000, 16, 16)],
)
def test_tfds_pipelines_on_mock_data(name, classes, image_size, expected_size, tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        for split, augment in (("train", True), ("test", False)):
            ds, info = data.get_dataset(name, split, data_dir=str(tmp_path), batch_size=4,
                                        image_size=image_size, augment=augment)
            assert info.num_classes == classes and info.num_examples == 6
            assert info.input_shape == (expected_size, expected_size, 3)
            batches = list(ds)
            assert [int(b[0].shape[0]) for b in batches] == [4, 2]
            x, y = batches[0]
            assert x.shape[1:] == info.input_shape and x.dtype == tf.float32
            assert ((y.numpy() >= 0) & (y.numpy() < classes)).all()
            # ImageNet mean/std normalization of values in [0, 1].
            low = (0 - np.array(data._IMAGENET_MEAN)) / data._IMAGENET_STD
            high = (1 - np.array(data._IMAGENET_MEAN)) / data._IMAGENET_STD
            assert float(tf.reduce_min(x)) >= low.min() - 1e-5
            assert float(tf.reduce_max(x)) <= high.max() + 1e-5


def test_augmentation_repeats_for_a_seed_and_changes_every_epoch(tmp_path):
    def epochs(seed):
        ds, _ = data.get_dataset("cifar10", "train", data_dir=str(tmp_path), batch_size=8,
                                 augment=True, shuffle=False, seed=seed)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2)]

    with tfds.testing.mock_data(num_examples=16):
        first, again, other = epochs(0), epochs(0), epochs(1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other[0])


def test_normalizations():
    x = tf.constant([[[[0.0, 0.5, 1.0]]]])
    np.testing.assert_allclose(data.normalize(x, "unit"), x)
    np.testing.assert_allclose(data.normalize(x, "tf"), [[[[-1.0, 0.0, 1.0]]]])
    np.testing.assert_allclose(
        data.normalize(x, "imagenet"),
        [[[[-0.485 / 0.229, (0.5 - 0.456) / 0.224, (1 - 0.406) / 0.225]]]], rtol=1e-6)
    # caffe: BGR order, 0..255, minus the BGR mean.
    np.testing.assert_allclose(
        data.normalize(x, "caffe"), [[[[255 - 103.939, 127.5 - 116.779, -123.68]]]], rtol=1e-5)
    with pytest.raises(ValueError, match="normalization"):
        data.normalize(x, "zscore")


def test_center_crop_keeps_the_aspect_ratio_and_takes_the_middle():
    image = tf.reshape(tf.range(16 * 32, dtype=tf.float32), (16, 32, 1))
    out = data._center_crop(image, 7).numpy()  # shorter side -> 8, long side -> 16
    assert out.shape == (7, 7, 1)
    resized = tf.image.resize(image, (8, 16)).numpy()
    np.testing.assert_allclose(out, resized[0:7, 4:11], rtol=1e-6)


@pytest.mark.parametrize("name, hint", [("cifar10", "tfds build cifar10"),
                                        ("imagenet2012", "manual_dir")])
def test_data_dir_without_data_is_a_clear_error(name, hint, tmp_path):
    with pytest.raises(ValueError, match="No prepared") as error:
        data.get_dataset(name, "train", data_dir=str(tmp_path))
    assert hint in str(error.value) and str(tmp_path) in str(error.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Unknown data set 'mnist'.*cifar10"):
        data.get_dataset("mnist", "train")
    with pytest.raises(ValueError, match=r"Unknown split 'validation'.*'train', 'test'"):
        data.get_dataset("digits", "validation")
    with pytest.raises(ValueError, match="BuilderConfig bogus not found"):
        data.get_dataset("imagenette/bogus", "train")
    with pytest.raises(ValueError, match="batch_size"):
        data.get_dataset("digits", "train", batch_size=0)
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits(test_fraction=1.0)
