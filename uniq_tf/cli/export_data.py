"""The data the export commands calibrate, check and choose grids on, as ``uniq-train`` read it.

``uniq-export-tflite`` and ``uniq-export-finn`` take the same flags (:func:`define_flags`): the
model, the output folder, the check, and the data:

- ``--dataset``: ``digits`` (scikit-learn's, bundled), a tensorflow-datasets name ``uniq-train``
  knows (``cifar10``, ``imagenette[/<config>]``, ``imagenet2012``; read from ``--data_dir``,
  never downloaded), a ``.npy`` file of inputs or a ``.npz`` file with ``x`` (and ``y``), or
  ``none`` (random inputs inside ``--input_range``, which it then needs).
- The preprocessing is the one ``uniq-train`` used: read from the ``summary.json`` of the
  training run beside the model file (its ``preprocessing``: image size and normalization),
  else the model's default (``uniq_tf.models.PREPROCESSING``) at the model's input size. A
  file of inputs is taken as it is.
- The model's input shape is checked against the data's before anything is written.

The training split calibrates (int8 ranges), the test split checks; both are taken in order,
without augmentation, so the same command gives the same files.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from uniq_tf.zoo import data, models

NONE = "none"
DIGITS_INPUT = {"bits": 5, "scale": 1 / 16, "signed": False}  # pixel counts 0..16, exactly
DEFAULT_SAMPLES = 512
RANDOM_SAMPLES = 200
RUN_SUMMARY = "summary.json"


@dataclasses.dataclass
class ExportData:
    """What an export command reads for a model.

    name: the data's name for reports. calibration: inputs of the training split (None for
    ``none``). samples, labels: inputs (and labels, or None) to check on. input_range: the
    stated input range (``--input_range``), or None. input_quant: the input quantizer a data
    set defines exactly (digits: 5-bit pixel counts), or None. source: where the samples come
    from, in words.
    """

    name: str
    calibration: np.ndarray | None
    samples: np.ndarray
    labels: np.ndarray | None
    input_range: tuple[float, float] | None
    input_quant: dict | None
    source: str


def define_flags(output_dir: str, checked_in: str) -> None:
    """The flags both export commands share: the model, where it goes, its data, the check.

    output_dir: the command's default output folder. checked_in: what runs the check (words).
    """
    from absl import flags

    flags.DEFINE_string("model", None, "Quantized model (.h5) written by uniq-train.")
    flags.DEFINE_string("output_dir", output_dir, "Where the exports and summary.json go.")
    flags.DEFINE_bool("check", True, f"Check the export in {checked_in} against the Keras "
                      "model before writing it (--nocheck writes it unchecked).")
    flags.mark_flag_as_required("model")
    flags.DEFINE_string(
        "dataset", "digits",
        f"Data to calibrate and check on: {', '.join(data.DATASETS)} (tensorflow-datasets, "
        "from --data_dir), a .npy/.npz file of inputs (npz: x and optional y), or none "
        "(random inputs inside --input_range). Preprocessed as uniq-train did for the model "
        "(its run's summary.json).")
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir with the prepared data "
                        "(nothing is downloaded).")
    flags.DEFINE_string("input_range", None, "lo,hi: the model input's range (needed with "
                        "--dataset=none; else the data must lie inside it).")
    flags.DEFINE_integer("samples", DEFAULT_SAMPLES, "Inputs of each split to read.")


def parse_range(text: str | None) -> tuple[float, float] | None:
    """ "lo,hi" -> (lo, hi) with lo < hi; None stays None."""
    if text in (None, ""):
        return None
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--input_range takes 'lo,hi' (two numbers), got {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"--input_range needs finite lo < hi, got {text!r}")
    return lo, hi


def run_preprocessing(model_path: str) -> dict | None:
    """The preprocessing of the uniq-train run that wrote ``model_path`` (its summary.json),
    or None when there is no such run."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), RUN_SUMMARY)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    if "preprocessing" in summary:
        return summary["preprocessing"]
    config = summary.get("config", {})  # runs made before the preprocessing was recorded
    if "model" not in config:
        return None
    return {"dataset": config.get("dataset"), "image_size": config.get("image_size"),
            "normalization": models.PREPROCESSING.get(config["model"], "imagenet")}


def check_shape(model, x: np.ndarray, name: str) -> None:
    """ValueError, before anything is written, when ``x``'s samples do not fit the model."""
    want = tuple(model.inputs[0].shape[1:])
    got = tuple(x.shape[1:])
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got,
                                                                             strict=False)):
        raise ValueError(
            f"The model takes inputs {want}, {name} gives {got}; pass the data the model was "
            "trained on (--dataset, --data_dir), or --dataset=none with --input_range.")


def _take(dataset, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    xs, ys, taken = [], [], 0
    for x, y in dataset:
        xs.append(np.asarray(x, np.float32))
        ys.append(np.asarray(y))
        taken += len(xs[-1])
        if taken >= count:
            break
    if not xs:
        raise ValueError("the data set gave no examples")
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def _from_file(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not os.path.isfile(path):
        raise ValueError(f"--dataset={path!r}: no such file")
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32), None
    with np.load(path) as arrays:
        if "x" not in arrays:
            raise ValueError(f"--dataset={path!r}: an .npz file needs an array 'x' (inputs) "
                             f"and may hold 'y' (labels); it holds {sorted(arrays)}")
        x = arrays["x"].astype(np.float32)
        y = arrays["y"] if "y" in arrays else None
    if y is not None and len(y) != len(x):
        raise ValueError(f"--dataset={path!r}: x has {len(x)} rows, y {len(y)}")
    return x, y


def _tfds(name: str, model, model_path: str, data_dir, count: int):
    preprocessing = run_preprocessing(model_path) or {}
    size = preprocessing.get("image_size") or model.inputs[0].shape[1]
    normalization = preprocessing.get("normalization") or "imagenet"
    splits = {}
    for split in ("train", "test"):
        dataset, _ = data.get_dataset(name, split, data_dir=data_dir, batch_size=64,
                                      image_size=size, augment=False, shuffle=False,
                                      normalization=normalization)
        splits[split] = _take(dataset, count)
    return splits, f"{name} ({normalization} normalization, {size}x{size})"


def load(dataset: str, model, model_path: str, data_dir: str | None = None,
         input_range: tuple[float, float] | None = None,
         samples: int = DEFAULT_SAMPLES) -> ExportData:
    """The export data of ``--dataset`` for ``model`` (module docstring).

    Raises:
        ValueError: an unknown data set, a file without inputs, ``none`` without a range, data
            that do not fit the model's input, or a data_dir without the prepared data.
    """
    if samples < 1:
        raise ValueError(f"--samples must be a positive integer, got {samples}")
    if dataset == NONE:
        if input_range is None:
            raise ValueError("--dataset=none checks the export on random inputs inside the "
                             "model's input range: pass --input_range=lo,hi")
        shape = tuple(1 if s is None else s for s in model.inputs[0].shape[1:])
        x = np.random.default_rng(0).uniform(*input_range, (min(samples, RANDOM_SAMPLES),
                                                             *shape)).astype(np.float32)
        return ExportData("none", None, x, None, input_range, None,
                          f"{len(x)} random inputs, uniform in [{input_range[0]:g}, "
                          f"{input_range[1]:g}]")
    if dataset.endswith((".npy", ".npz")):
        x, y = _from_file(dataset)
        check_shape(model, x, f"--dataset={dataset}")
        return ExportData(os.path.basename(dataset), x[:samples], x[:samples],
                          None if y is None else y[:samples], input_range, None,
                          f"{min(samples, len(x))} inputs of {dataset}")
    base = dataset.split("/")[0]
    if base not in data.DATASETS:
        raise ValueError(f"--dataset must be one of {list(data.DATASETS)}, a .npy/.npz file or "
                         f"{NONE!r}, got {dataset!r}")
    if base == "digits":
        x_train, _, x_test, y_test = data.load_digits()
        check_shape(model, x_test, "--dataset=digits")
        return ExportData("digits", x_train[:samples], x_test[:samples], y_test[:samples],
                          input_range, DIGITS_INPUT,
                          f"{min(samples, len(x_test))} digits of the test split")
    splits, name = _tfds(dataset, model, model_path, data_dir, samples)
    x_train, _ = splits["train"]
    x_test, y_test = splits["test"]
    check_shape(model, x_test, f"--dataset={dataset}")
    return ExportData(name, x_train, x_test, y_test, input_range, None,
                      f"{len(x_test)} inputs of the test split of {name}")


__all__ = ["DIGITS_INPUT", "ExportData", "check_shape", "define_flags", "load", "parse_range",
           "run_preprocessing"]
