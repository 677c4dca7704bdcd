"""Weight histograms: files, the plotted edges and levels, and the TensorBoard callback."""

import numpy as np
import pytest
from PIL import Image

import uniq_tf
from uniq_tf._keras import keras, tf
from uniq_tf.cost.visualize import (
    LEVELS_GID,
    THRESHOLDS_GID,
    WeightHistograms,
    histogram_figure,
    kernel_histograms,
    plot_weight_histograms,
)

KEYS = ["conv", "sep_depthwise", "sep", "fc"]  # SeparableConv2D: split in two layers


def small_model(**quantize_kwargs):
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, name="fc")(x)
    return uniq_tf.quantize_model(keras.Model(inp, out), **quantize_kwargs)


def plotted(fig, gid):
    """x positions of the vertical lines with ``gid``, one array per axes."""
    out = []
    for ax in fig.axes:
        for collection in ax.collections:
            if collection.get_gid() == gid:
                out.append(np.array([segment[0][0] for segment in collection.get_segments()]))
    return out


def test_one_valid_png_per_quantized_kernel(tmp_path):
    model = small_model(weight_bits=3)
    paths = plot_weight_histograms(model, tmp_path / "hist")
    assert [p.name for p in paths] == [k.replace("/", "__") + ".png" for k in KEYS]
    assert sorted(p.name for p in (tmp_path / "hist").iterdir()) == sorted(p.name for p in paths)
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 200
    grid = plot_weight_histograms(model, tmp_path / "all.png", layers=["conv", "fc"])
    assert grid == [tmp_path / "all.png"]
    with Image.open(grid[0]) as image:
        assert image.format == "PNG"


@pytest.mark.parametrize(
    ("per_channel", "distribution"),
    [(False, "gaussian"), (True, "gaussian"), (False, "empirical")],
)
def test_plotted_levels_and_edges_are_the_codebooks(per_channel, distribution):
    model = small_model(weight_bits=2, per_channel=per_channel, distribution=distribution)
    codebooks = uniq_tf.get_codebooks(model)
    hists = kernel_histograms(model)
    assert list(hists) == KEYS
    for key, hist in hists.items():
        book = codebooks[key]
        levels = np.atleast_2d(book.levels)
        fig = histogram_figure(hist)
        drawn_levels = plotted(fig, LEVELS_GID)
        drawn_edges = plotted(fig, THRESHOLDS_GID)
        shown = min(levels.shape[0], 4)
        assert len(drawn_levels) == len(drawn_edges) == shown
        for row in range(shown):
            np.testing.assert_array_equal(drawn_levels[row], levels[row].astype(np.float64))
            np.testing.assert_array_equal(drawn_edges[row], hist.thresholds[row])
        # The edges are the bin boundaries the quantizer used: each weight's codebook index
        # is the number of edges below it (up to float rounding right at an edge).
        rows, _ = uniq_tf.kquantile.to_rows(tf.constant(book.indices), book.channel_axes)
        for weights, edges, indices, level_row in zip(
            hist.weights, hist.thresholds, rows.numpy(), levels, strict=True
        ):
            assert len(edges) == book.size - 1 and np.all(np.diff(edges) > 0)
            counted = np.searchsorted(edges, weights, side="right")
            near_edge = np.min(np.abs(weights[:, None] - edges[None, :]), axis=1) < 1e-6
            assert np.all((counted == indices) | near_edge)
            # Each level (a bin's median) lies inside its bin.
            assert np.all(level_row[:-1] < edges) and np.all(edges < level_row[1:])


def test_layer_selection_and_errors(tmp_path):
    model = small_model()
    assert list(kernel_histograms(model, ["sep_depthwise", "sep"])) == KEYS[1:3]
    assert list(kernel_histograms(model, "fc")) == ["fc"]
    with pytest.raises(ValueError, match=r"\['nope'\].*quantized kernels"):
        plot_weight_histograms(model, tmp_path, layers=["nope"])
    with pytest.raises(ValueError, match="log_dir, png_dir or both"):
        WeightHistograms(None)
    with pytest.raises(ValueError, match="every_n_epochs"):
        WeightHistograms(tmp_path, every_n_epochs=0)


def test_callback_writes_pngs_and_tensorboard_images(tmp_path, digits):
    x, y, _, _ = digits
    model = small_model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = WeightHistograms(tmp_path / "tb", every_n_epochs=2, png_dir=tmp_path / "png")
    model.fit(x[:64], y[:64], batch_size=32, epochs=4, callbacks=[callback], verbose=0)
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["epoch_0002", "epoch_0004"]
    assert len(list((tmp_path / "png" / "epoch_0004").glob("*.png"))) == len(KEYS)
    images = {}
    for path in (tmp_path / "tb").rglob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "images"
                images[(value.tag, event.step)] = tf.make_ndarray(value.tensor)
    assert set(images) == {(f"weights/{k}", s) for k in KEYS for s in (1, 3)}
    width, height, png = images[("weights/fc", 3)]
    decoded = tf.io.decode_png(png)
    assert decoded.shape[:2] == (int(height), int(width))
