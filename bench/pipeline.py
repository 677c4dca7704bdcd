"""Input pipeline at ImageNet size: images per second the training command's
tfds/keras-cv pipeline delivers at 224x224, against the images per second a UNIQ train step
consumes on the same machine.

The pipeline is ``uniq_tf.data.get_dataset("imagenette", ...)``, the one ``uniq-train`` uses
for imagenette and imagenet2012 (tfds records read with ``SkipDecoding``, shuffled as encoded
strings, decoded and cropped in parallel with ``AUTOTUNE``, batched, flipped, normalized,
prefetched). Nothing is downloaded: ``tfds.testing.mock_data`` serves JPEGs made here, of
ImageNet's typical size (500x375, random smooth content, quality 90), so that decoding and the
random resized crop cost what they cost on real photos; tfds' own mock images are a few pixels
wide and would flatter the pipeline.

Measured, after ``--warmup`` batches: the train pipeline (random resized crop + flip) and the
evaluation pipeline (resize + center crop), images per second over ``--batches`` batches; the
model: ResNet-18 at 224x224 quantized by ``uniq_tf.quantize_model`` (W4A8, NOISY), train steps
of ``--model_batch`` images after one traced step, images per second. The ratio pipeline/model
is the margin the target asks for (at least 3x). Both run on the same 2 cores, one after the
other: on an accelerator the model side is tens of times faster and the pipeline's images per
second per CPU core is the number to plan with (docs/scaling.md).

    .venv/bin/python -m bench.pipeline --output_dir=outputs/bench/pipeline --docs_dir=docs
    .venv/bin/python -m bench.pipeline --quick                 # a smoke run, < 2 min
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import uniq_tf
from bench import common
from uniq_tf._keras import keras, tf
from uniq_tf.zoo import data, models

ROOT = Path(__file__).resolve().parents[1]
SECTION = "pipeline"
JPEG_SHAPE = (375, 500)  # ImageNet's most common size (height, width)


def _jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct JPEGs of JPEG_SHAPE: smooth random colour fields with noise."""
    rng = np.random.default_rng(seed)
    h, w = JPEG_SHAPE
    out = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, (h // 25 + 1, w // 25 + 1, 3)).astype("float32")
        image = tf.image.resize(coarse[None], (h, w), method="bicubic")[0]
        image = image + rng.normal(0, 12, (h, w, 3)).astype("float32")
        image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
        out.append(tf.io.encode_jpeg(image, quality=90).numpy())
    return out


def _as_dataset_fn(jpegs: list[bytes]):
    labels = np.arange(len(jpegs)) % 10

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del self, split, decoders, read_config, shuffle_files
        return tf.data.Dataset.from_tensor_slices(
            {"image": tf.constant(jpegs), "label": tf.constant(labels, tf.int64)})

    return as_dataset


def pipeline_rate(augment: bool, batch_size: int, batches: int, warmup: int,
                  jpegs: list[bytes], image_size: int) -> dict:
    """Images per second of the train (augment) or evaluation pipeline, after warm-up."""
    import tensorflow_datasets as tfds

    needed = batch_size * (batches + warmup)
    with tfds.testing.mock_data(num_examples=len(jpegs), as_dataset_fn=_as_dataset_fn(jpegs)):
        ds, _ = data.get_dataset("imagenette", "train" if augment else "test",
                                 data_dir="/nonexistent", batch_size=batch_size,
                                 image_size=image_size, augment=augment)
        ds = ds.repeat()
        iterator = iter(ds)
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            images, _ = next(iterator)
        seconds = time.perf_counter() - start
    assert tuple(images.shape[1:]) == (image_size, image_size, 3)
    return {"images": batches * batch_size, "seconds": seconds,
            "images_per_s": batches * batch_size / seconds, "examples_cycled": needed}


def model_rate(batch_size: int, steps: int, image_size: int, model_name: str) -> dict:
    """Images per second of a UNIQ (W4A8, NOISY) train step of ``model_name``."""
    keras.utils.set_random_seed(0)
    model = models.get_model(model_name, (image_size, image_size, 3), 1000)
    q = uniq_tf.quantize_model(model, 4, 8)
    q.compile(keras.optimizers.SGD(0.01, momentum=0.9),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = tf.random.uniform((batch_size, image_size, image_size, 3))
    y = tf.random.uniform((batch_size,), 0, 1000, tf.int64)
    start = time.perf_counter()
    q.train_on_batch(x, y)  # traces
    trace_seconds = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        q.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"model": model_name, "batch_size": batch_size, "steps": steps,
            "trace_seconds": trace_seconds, "step_seconds": times,
            "images_per_s": batch_size / median}


def _load(machine: dict) -> str:
    load = machine.get("load_average")
    return f"{load[0]:.1f}" if load else "n/a"


def markdown(result: dict) -> str:
    machine, cfg = result["machine"], result["config"]
    train, evaluation, model = result["train"], result["eval"], result["model"]
    cores = machine.get("cores") or 1
    rows = [
        ["train pipeline (random resized crop + flip)", f"{train['images_per_s']:.0f}",
         f"{train['images_per_s'] / cores:.0f}",
         f"{train['images_per_s'] / model['images_per_s']:.1f}x"],
        ["evaluation pipeline (resize + center crop)", f"{evaluation['images_per_s']:.0f}",
         f"{evaluation['images_per_s'] / cores:.0f}",
         f"{evaluation['images_per_s'] / model['images_per_s']:.1f}x"],
        [f"UNIQ W4A8 train step, {model['model']} (batch {model['batch_size']})",
         f"{model['images_per_s']:.1f}", f"{model['images_per_s'] / cores:.1f}", "1.0x"],
    ]
    start, end = common.section_markers(SECTION)
    return "\n".join([
        start,
        f"## 8. Input pipeline at {cfg['image_size']}x{cfg['image_size']} "
        "(`bench/pipeline.py`, run by hand)",
        "",
        f"Generated by `{result['command']}` on {machine['date']} ({machine.get('cpu', '')}, "
        f"{cores} cores, load average {_load(machine)} at the start; TensorFlow "
        f"{machine.get('tensorflow', '')}). The training command's "
        f"imagenette/imagenet2012 pipeline on {cfg['jpegs']} JPEGs of "
        f"{JPEG_SHAPE[1]}x{JPEG_SHAPE[0]} served through `tfds.testing.mock_data` (nothing "
        f"downloaded), batches of {cfg['batch_size']}, {cfg['batches']} timed after "
        f"{cfg['warmup']} warm-up batches; the model's train step timed on the same cores "
        "afterwards (median of "
        f"{model['steps']} steps after the traced one).",
        "",
        common.markdown_table(
            ["stage", "images/s", "images/s per core", "vs the model"], rows),
        "",
        "Target: the pipeline delivers at least 3x the images per second the model "
        "consumes on this machine: "
        + ("**met**" if train["images_per_s"] >= 3 * model["images_per_s"] else "**not met**")
        + f" ({train['images_per_s'] / model['images_per_s']:.1f}x for training).",
        end,
        "",
    ])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "bench" / "pipeline"))
    parser.add_argument("--docs_dir", default=None,
                        help="If set, splice the section into <docs_dir>/benchmarks.md.")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--jpegs", type=int, default=512)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--model_batch", type=int, default=16)
    parser.add_argument("--model_steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="Small counts: a smoke run.")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.warmup, args.jpegs, args.batch_size = 3, 1, 64, 16
        args.model, args.model_batch, args.model_steps, args.image_size = "resnet18", 2, 1, 64
    common.set_seed(0)
    print(f"making {args.jpegs} JPEGs of {JPEG_SHAPE[1]}x{JPEG_SHAPE[0]}", flush=True)
    jpegs = _jpegs(args.jpegs)
    result = {"config": vars(args), "machine": common.machine()}
    for name, augment in (("train", True), ("eval", False)):
        print(f"timing the {name} pipeline", flush=True)
        result[name] = pipeline_rate(augment, args.batch_size, args.batches, args.warmup, jpegs,
                                     args.image_size)
        print(f"  {result[name]['images_per_s']:.0f} images/s", flush=True)
    print(f"timing UNIQ {args.model} train steps (the first one traces)", flush=True)
    result["model"] = model_rate(args.model_batch, args.model_steps, args.image_size, args.model)
    print(f"  {result['model']['images_per_s']:.1f} images/s", flush=True)
    result["command"] = " ".join(["python -m bench.pipeline"] + (argv or []))
    os.makedirs(args.output_dir, exist_ok=True)
    common.write_json(os.path.join(args.output_dir, "pipeline.json"), result)
    text = markdown(result)
    common.write_text(os.path.join(args.output_dir, "pipeline.md"), text)
    print(text)
    if args.docs_dir:
        page_path = Path(args.docs_dir) / "benchmarks.md"
        page = common.splice_section(page_path.read_text(encoding="utf-8"), SECTION, text)
        common.write_text(str(page_path), page)
        print(f"wrote section '{SECTION}' of {page_path}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
