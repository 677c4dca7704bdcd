"""The settings every phase of bench.fpga shares (the data split, the digits' input quantizer,
the board's capacity) and the progress line of its long steps. No TensorFlow: FINN's venv
imports this."""

from __future__ import annotations

import time

VALIDATION_SIZE = 360
AUTO_TOLERANCE = 0.005
# The digits' input quantizer, exact: pixel counts 0..16 scaled by 1/16 (export_finn's
# input_bits, input_scale, input_signed).
DIGITS_INPUT = {"input_bits": 5, "input_scale": 1 / 16, "input_signed": False}
PYNQ_Z1 = {"LUT": 53_200, "BRAM_18K": 280}  # the XC7Z020's capacity


def progress(start: float, message: str) -> None:
    """One progress line with the seconds since ``start`` (long steps show where they are)."""
    print(f"[{time.monotonic() - start:7.1f} s] {message}", flush=True)
