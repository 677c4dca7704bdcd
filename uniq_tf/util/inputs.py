"""The data forms every entry point that reads inputs accepts, in one place.

``calibrate_activations``, ``allocate_bits``, ``tflite_export.export_tflite``
(``representative_data``, ``samples``) and ``fpga_export.export_finn`` (``validation_data``)
take the same forms:

- an array (numpy or tensor) of inputs, batched along axis 0;
- a tuple ``(x, y)`` of two arrays with as many rows: inputs and labels;
- a ``tf.data.Dataset`` of batches, each ``x``, ``(x, y)`` or ``(x, y, sample_weight)``;
- any other iterable of such batches (a list of arrays, a generator), or a function returning
  one (the TFLite converter's ``representative_dataset`` style, whose items are ``[x]``).

A list is always a sequence of batches, never an ``(x, y)`` pair. Given the model, an unbatched
``tf.data.Dataset`` (elements of one sample, one axis fewer than the model's input) is batched;
without the model, a Dataset must be batched.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from uniq_tf._keras import tf

FORMS = ("an array of inputs", "an (x, y) tuple of arrays", "a tf.data.Dataset",
         "an iterable of batches", "a function returning one")


def _is_array(value) -> bool:
    return isinstance(value, (np.ndarray, tf.Tensor))


def is_xy_pair(data) -> bool:
    """True for a tuple (inputs, labels) of two arrays with as many rows."""
    return (isinstance(data, tuple) and len(data) == 2 and all(_is_array(d) for d in data)
            and len(data[0]) == len(data[1]))


UNBATCHED_BATCH = 32


def input_rank(model) -> int | None:
    """The rank of ``model``'s (first) input, batch axis included; None without a model."""
    if model is None:
        return None
    return len(model.inputs[0].shape)


def _batched_dataset(data, batch_size: int | None, rank: int | None):
    """``data`` batched when its elements are single samples of a model of input ``rank``."""
    spec = data.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    shape = getattr(x_spec, "shape", None)
    if rank is None or shape is None or shape.rank is None or shape.rank != rank - 1:
        return data
    return data.batch(batch_size or UNBATCHED_BATCH)


def batches(
    data, batch_size: int | None, what: str = "data", model=None
) -> Iterator[tuple[object, object]]:
    """Yields ``(x, y or None)`` batches from ``data`` in any of the module's forms; arrays are
    split into batches of ``batch_size`` rows (None: one batch, whole), other batches are
    passed on as they come.

    Args:
        data: inputs in one of the forms of the module docstring.
        batch_size: rows per batch for arrays, (x, y) pairs and unbatched datasets; None
            takes arrays whole (and an unbatched dataset in batches of 32).
        what: the argument's name, for the error.
        model: the model the inputs are for: an unbatched dataset is recognized from its
            input rank and batched.

    Returns:
        An iterator of (inputs, labels or None) batches (arrays or tensors, as given).

    Raises:
        TypeError: ``data`` is none of the forms (raised when the iterator starts).
    """
    rank = input_rank(model)
    if isinstance(data, tf.data.Dataset):
        data = _batched_dataset(data, batch_size, rank)
    if batch_size is None and (is_xy_pair(data) or _is_array(data)):
        yield (data[0], data[1]) if is_xy_pair(data) else (data, None)
        return
    if is_xy_pair(data):
        x, y = data
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    if _is_array(data):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size], None
        return
    if callable(data) and not isinstance(data, tf.data.Dataset):
        data = data()
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"{what} must be {', '.join(FORMS[:-1])} or {FORMS[-1]}; got {type(data).__name__}."
        )
    for item in data:
        if isinstance(item, dict):
            raise TypeError(f"{what}: batches must be x, (x, y) or (x, y, weights), not dicts.")
        if isinstance(item, (tuple, list)):
            yield item[0], (item[1] if len(item) > 1 else None)
        else:
            yield item, None


def _input_dtype(model) -> np.dtype:
    """The dtype samples of ``model`` are given in: its integer input dtype, else float32."""
    dtype = np.dtype(model.inputs[0].dtype.as_numpy_dtype)
    return dtype if np.issubdtype(dtype, np.integer) else np.dtype(np.float32)


def samples(data, model, limit: int | None = None, what: str = "data") -> np.ndarray:
    """Up to ``limit`` (default all) input samples of ``model`` from ``data`` in any form of
    the module, as one array (N, *input_shape): float32, or the model's integer dtype.

    Raises:
        ValueError: a batch that does not fit the model's input (named with its shape), no
            samples, or NaN/inf values (saying how many samples hold them).
        TypeError: ``data`` is none of the forms.
    """
    shape = tuple(model.inputs[0].shape[1:])
    dtype = _input_dtype(model)
    taken, count = [], 0
    try:
        for given, _ in batches(data, None, what, model=model):
            given = np.asarray(given)
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
    out = np.concatenate(taken, axis=0)
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{what} holds non-finite values (NaN or inf) in {len(rows)} of {len(out)} "
            f"samples (first: {rows[:5].tolist()}); calibrating or verifying on them means "
            "nothing. Pass finite inputs."
        )
    return out


__all__ = ["FORMS", "batches", "input_rank", "is_xy_pair", "samples"]
