"""Samples for the TFLite exporter: the user's data as one array (``uniq_tf.util.inputs``), or
uniform random inputs inside the model input's range."""

from __future__ import annotations

import numpy as np

from uniq_tf.util import inputs

RANDOM_SAMPLES = 32
UNIT_RANGE = (0.0, 1.0)


def as_samples(
    data, model, limit: int | None = None, what: str = "representative_data"
) -> np.ndarray:
    """Up to ``limit`` (default all) input samples of ``model`` from ``data``, (N, *input_shape)
    (``uniq_tf.util.inputs.samples``)."""
    return inputs.samples(data, model, limit, what)


def random_samples(model, count: int = RANDOM_SAMPLES, seed: int = 0,
                   input_range: tuple[float, float] | None = None) -> np.ndarray:
    """Uniform samples inside ``input_range`` (default [0, 1], image data)."""
    shape = tuple(1 if s is None else s for s in model.inputs[0].shape[1:])
    lo, hi = UNIT_RANGE if input_range is None else input_range
    return np.random.default_rng(seed).uniform(lo, hi, (count, *shape)).astype(np.float32)
