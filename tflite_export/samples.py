"""Turning the user's representative data into an array of single samples: float32, or the
model's integer dtype for integer inputs (token ids), every value finite."""

from __future__ import annotations

import numpy as np

from uniq_tf.util import inputs

RANDOM_SAMPLES = 32


def _input_shape(model) -> tuple:
    return tuple(model.inputs[0].shape[1:])


def _input_dtype(model) -> np.dtype:
    """The dtype samples of ``model`` are given in: its integer input dtype, else float32."""
    dtype = np.dtype(model.inputs[0].dtype.as_numpy_dtype)
    return dtype if np.issubdtype(dtype, np.integer) else np.dtype(np.float32)


def _check_finite(samples: np.ndarray, what: str) -> np.ndarray:
    """``samples``, or ValueError saying how many values (in which samples) are NaN or inf."""
    bad = ~np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{what} holds non-finite values (NaN or inf) in {len(rows)} of {len(samples)} "
            f"samples (first: {rows[:5].tolist()}); calibrating or verifying on them means "
            "nothing. Pass finite inputs."
        )
    return samples


def _batches(data):
    """Yields input arrays from ``data`` in any form of :mod:`uniq_tf.inputs`."""
    for x, _ in inputs.batches(data, None):
        yield np.asarray(x)


def as_samples(
    data, model, limit: int | None = None, what: str = "representative_data"
) -> np.ndarray:
    """Up to ``limit`` (default all) input samples of ``model`` from ``data``, (N, *input_shape)."""
    shape, dtype = _input_shape(model), _input_dtype(model)
    taken, count = [], 0
    try:
        for given in _batches(data):
            batch = given[None] if given.ndim == len(shape) else given
            fits = batch.ndim == len(shape) + 1 and all(
                want is None or got == want
                for got, want in zip(batch.shape[1:], shape, strict=True)
            )
            if not fits:
                raise ValueError(
                    f"{what}: a batch of shape {given.shape} does not fit model input "
                    f"(None, {', '.join(str(s) for s in shape)})."
                )
            taken.append(batch[: None if limit is None else limit - count].astype(dtype))
            count += len(taken[-1])
            if limit is not None and count >= limit:
                break
    except TypeError as error:
        raise TypeError(
            f"{what} must be an array of inputs, a tf.data.Dataset, an iterable of batches or a "
            f"generator function; got {type(data).__name__} ({error})."
        ) from error
    if count == 0:
        raise ValueError(f"{what} holds no samples.")
    return _check_finite(np.concatenate(taken, axis=0), what)


def random_samples(model, count: int = RANDOM_SAMPLES, seed: int = 0) -> np.ndarray:
    """Uniform samples in [0, 1] (the project treats model inputs as 8-bit image data)."""
    shape = tuple(1 if s is None else s for s in _input_shape(model))
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, *shape)).astype(np.float32)

