"""The int8 checks on large models: an int8 TFLite export of MobileNetV2 (alpha 0.35,
96x96) and DenseNet121 (64x64), trained one epoch on random data, quantized W4A8 and
calibrated, passes verification with the right representative data and is refused when the
representative data is scaled 100x too large or too small.

Run: ``TF_USE_LEGACY_KERAS=1 python -m bench.int8_export_check [--models mobilenetv2 densenet121]``
(about 1 minute for MobileNetV2 and 3 for DenseNet121 on 2 CPU cores). Exits 1 if any export
does not behave as expected.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import tflite_export
import uniq_tf
from uniq_tf._keras import keras

SHAPES = {"mobilenetv2": (96, 96, 3), "densenet121": (64, 64, 3)}
MODELS = {
    "mobilenetv2": lambda: keras.applications.MobileNetV2(
        SHAPES["mobilenetv2"], alpha=0.35, weights=None, classes=10),
    "densenet121": lambda: keras.applications.DenseNet121(
        input_shape=SHAPES["densenet121"], weights=None, classes=10),
}
SAMPLES = 64
SCALES = (1.0, 100.0, 0.01)  # representative data = samples * scale; only 1.0 is right


def trained_quantized(name: str, x: np.ndarray, y: np.ndarray):
    """The model trained one epoch on (x, y), quantized W4A8 and calibrated on x."""
    model = MODELS[name]()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    quantized = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
    uniq_tf.calibrate_activations(quantized, x, verbose=False)
    return quantized


def check(name: str, out_dir: Path) -> bool:
    """Exports ``name`` with each representative-data scale; True if each behaved."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (SAMPLES, *SHAPES[name])).astype("float32")
    quantized = trained_quantized(name, x, rng.integers(0, 10, SAMPLES))
    ok = True
    for scale in SCALES:
        start = time.perf_counter()
        try:
            report = tflite_export.export_tflite(
                quantized, out_dir / f"{name}.tflite", "int8", x * scale, samples=x)
            outcome = (f"verified: max |diff| {report.max_abs_diff:.3g} <= "
                       f"{report.tolerance:.3g}, agreement {report.top1_agreement:.2f} "
                       f"({report.clear_rows} rows without a near tie)")
            ok &= scale == 1.0
        except tflite_export.VerificationError as error:
            outcome = "refused: " + str(error).split("): ", 1)[-1][:160]
            ok &= scale != 1.0
        print(f"{name:<12} data x{scale:<6g} {time.perf_counter() - start:5.1f} s  {outcome}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as out_dir:
        results = [check(name, Path(out_dir)) for name in args.models]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
