"""Weight histograms of quantized kernels with their k-quantile bins and codebook levels.

For a kernel with fitted CDF F and k = 2^b levels (docs/method.md, "Weights"), the plot
shows the float weights, the bin edges F^-1(i / k), i = 1..k-1 (dashed), and the codebook levels
F^-1((i + 1/2) / k) (solid). The edges come from :func:`uniq_tf.method.kquantile.fit` and
:func:`~uniq_tf.method.kquantile.inverse`, the levels from :func:`uniq_tf.get_codebooks`: the
k-quantile math is not re-implemented here. A well-fitted CDF puts about 1/k of the weights between
neighbouring edges.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorflow.core.framework import summary_pb2

from uniq_tf._keras import keras, require_keras2_model, tf
from uniq_tf.integration.inspection import float_kernel, get_codebooks, kernel_wrappers
from uniq_tf.method import kquantile
from uniq_tf.util import atomic

MAX_CHANNELS_SHOWN = 4
THRESHOLDS_GID = "thresholds"
LEVELS_GID = "levels"


@dataclass
class KernelHistogram:
    """What one histogram shows. Arrays have one row per set of statistics (1 per tensor,
    C per channel): weights (C, N), thresholds (C, k-1) = F^-1(i/k), levels (C, k)."""

    key: str
    bits: int
    distribution: str
    per_channel: bool
    weights: np.ndarray
    thresholds: np.ndarray
    levels: np.ndarray


def kernel_histograms(model, layers: Iterable[str] | None = None) -> dict[str, KernelHistogram]:
    """Histogram data per quantized kernel (codebook key: layer name, or "layer/attribute").

    ``layers`` selects by layer name or codebook key; None selects all.
    """
    model = require_keras2_model(model)
    codebooks = get_codebooks(model)
    keys = _select_keys(codebooks, layers)
    by_name = {w.layer.name: w for w in kernel_wrappers(model)}
    out = {}
    for key in keys:
        book = codebooks[key]
        kernel = float_kernel(by_name[book.layer], book.weight)
        rows, _ = kquantile.to_rows(kernel, book.channel_axes)
        stats = kquantile.fit(rows, book.distribution)
        k = book.size
        edges = np.arange(1, k, dtype=np.float32) / k
        probabilities = tf.tile(tf.constant(edges)[tf.newaxis, :], [rows.shape[0], 1])
        out[key] = KernelHistogram(
            key=key,
            bits=book.bits,
            distribution=book.distribution,
            per_channel=book.levels.ndim == 2,
            weights=rows.numpy(),
            thresholds=kquantile.inverse(probabilities, stats).numpy(),
            levels=np.atleast_2d(book.levels),
        )
    return out


def _select_keys(codebooks, layers) -> list[str]:
    if layers is None:
        return list(codebooks)
    if isinstance(layers, str):
        layers = [layers]
    wanted = list(layers)
    known = set(codebooks) | {book.layer for book in codebooks.values()}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(
            f"No quantized kernel layers named {unknown}; quantized kernels: {list(codebooks)}"
        )
    return [key for key, book in codebooks.items() if key in wanted or book.layer in wanted]


def _draw(ax, hist: KernelHistogram, row: int, legend: bool) -> None:
    k = 2**hist.bits
    line_width = 1.2 if k <= 16 else 0.4
    weights = hist.weights[row]
    ax.hist(
        weights,
        bins=int(np.clip(weights.size // 8, 20, 120)),
        color="#9ab",
        label=f"float weights (n={weights.size})",
    )
    ax.vlines(
        hist.thresholds[row],
        0,
        1,
        transform=ax.get_xaxis_transform(),
        colors="k",
        linestyles="dashed",
        linewidths=line_width * 0.8,
        gid=THRESHOLDS_GID,
        label="bin edges F^-1(i/k)",
    )
    ax.vlines(
        hist.levels[row],
        0,
        1,
        transform=ax.get_xaxis_transform(),
        colors="#c22",
        linewidths=line_width,
        gid=LEVELS_GID,
        label="codebook F^-1((i+1/2)/k)",
    )
    ax.set_ylabel("count")
    if legend:
        ax.legend(fontsize=7, loc="upper right")


def _title(hist: KernelHistogram) -> str:
    return f"{hist.key}: {hist.bits}-bit k-quantile, {2**hist.bits} levels, {hist.distribution} CDF"


def _new_figure(panels: int) -> Figure:
    fig = Figure(figsize=(7, 2.6 * panels + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def histogram_figure(hist: KernelHistogram) -> Figure:
    """A matplotlib Figure (Agg canvas) of one kernel; per channel, the first few channels."""
    rows = min(hist.weights.shape[0], MAX_CHANNELS_SHOWN)
    fig = _new_figure(rows)
    for r in range(rows):
        ax = fig.add_subplot(rows, 1, r + 1)
        _draw(ax, hist, r, legend=r == 0)
        if hist.per_channel:
            ax.set_title(f"channel {r}", fontsize=9)
    fig.axes[-1].set_xlabel("weight value")
    scope = (
        f"per channel, first {rows} of {hist.weights.shape[0]} channels"
        if hist.per_channel
        else "per tensor"
    )
    fig.suptitle(f"{_title(hist)}, {scope}", fontsize=10)
    return fig


def grid_figure(hists: list[KernelHistogram]) -> Figure:
    """All kernels in one Figure, one panel each (channel 0 of per-channel kernels)."""
    fig = _new_figure(len(hists))
    for i, hist in enumerate(hists):
        ax = fig.add_subplot(len(hists), 1, i + 1)
        _draw(ax, hist, 0, legend=i == 0)
        ax.set_title(_title(hist) + (", channel 0" if hist.per_channel else ""), fontsize=9)
    fig.axes[-1].set_xlabel("weight value")
    return fig


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _write_png_summary(tag: str, png: bytes, step: int) -> None:
    """What tf.summary.image writes for one PNG (the event TensorBoard's images plugin reads:
    [width, height, png]), without needing the tensorboard package."""
    width, height = struct.unpack(">II", png[16:24])  # the PNG IHDR chunk
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    tensor = tf.constant([str(width).encode(), str(height).encode(), png])
    tf.summary.write(tag, tensor, step=step, metadata=metadata)


def file_name(key: str) -> str:
    """PNG file name of a codebook key ("sep/depthwise_kernel" -> "sep__depthwise_kernel.png")."""
    return key.replace("/", "__") + ".png"


def plot_weight_histograms(
    model, path_or_dir: str | os.PathLike, layers: Iterable[str] | None = None
) -> list[Path]:
    """Draws each quantized kernel's weights with its quantile thresholds and codebook levels.

    Args:
        model: a quantized model.
        path_or_dir: a path ending in ".png" for one grid PNG with a panel per kernel;
            otherwise a directory (created if needed) with one PNG per kernel, named by
            :func:`file_name`.
        layers: names or codebook keys of the kernels to draw; None draws all.

    Returns:
        The paths written, in forward order.

    Raises:
        ValueError: ``layers`` names a kernel the model does not quantize.
    """
    target = Path(path_or_dir)
    hists = kernel_histograms(model, layers)
    if target.suffix.lower() == ".png":
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(target, figure_png(grid_figure(list(hists.values()))))
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, hist in hists.items():
        path = target / file_name(key)
        atomic.write_bytes(path, figure_png(histogram_figure(hist)))
        paths.append(path)
    return paths


class WeightHistograms(keras.callbacks.Callback):
    """Writes the kernel histograms every ``every_n_epochs`` epochs during ``fit``.

    Args:
        log_dir: TensorBoard directory; images go to ``log_dir/weights`` as
            ``weights/<key>`` (TensorBoard image summaries, step = epoch index). None: no
            TensorBoard.
        every_n_epochs: write after epochs n, 2n, ... (1-based).
        png_dir: if given, PNGs also go to ``png_dir/epoch_<NNNN>/<key>.png``.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None,
        every_n_epochs: int = 1,
        png_dir: str | os.PathLike | None = None,
    ):
        super().__init__()
        if log_dir is None and png_dir is None:
            raise ValueError("WeightHistograms needs log_dir, png_dir or both; got neither.")
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or (every_n_epochs < 1)
        ):
            raise ValueError(f"every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.png_dir = None if png_dir is None else Path(png_dir)
        self.every_n_epochs = every_n_epochs
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir / "weights"))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        directory = None
        if self.png_dir is not None:
            directory = self.png_dir / f"epoch_{epoch + 1:04d}"
            directory.mkdir(parents=True, exist_ok=True)
        for key, hist in kernel_histograms(self.model).items():
            png = figure_png(histogram_figure(hist))
            if directory is not None:
                atomic.write_bytes(directory / file_name(key), png)
            if self._writer is not None:
                with self._writer.as_default():
                    _write_png_summary(f"weights/{key}", png, step=epoch)
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = [
    "KernelHistogram",
    "WeightHistograms",
    "grid_figure",
    "histogram_figure",
    "kernel_histograms",
    "plot_weight_histograms",
]
