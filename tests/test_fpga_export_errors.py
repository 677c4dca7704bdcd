"""The FINN exporter's refusals and its slow parts: non-finite weights are named, a file or an
unwritable directory is refused before any work, FINN's notes come one line per cause, the
qonnx cost cross-check can be skipped, and non-finite outputs fail the parity check."""

import os

import numpy as np
import pytest

import uniq_tf
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import float_kernel

L = keras.layers


def test_non_finite_weights_are_named_by_the_finn_export(tmp_path):
    fpga_export = pytest.importorskip("fpga_export")
    inp = keras.Input((4, 4, 1))
    flat = L.Flatten()(L.Conv2D(2, 3, activation="relu", name="conv")(inp))
    quantized = uniq_tf.quantize_model(keras.Model(inp, L.Dense(2, name="fc")(flat)))
    variable = float_kernel(quantized.get_layer("conv"))
    variable.assign(tf.fill(variable.shape, np.nan))
    with pytest.raises(ValueError, match=r"non-finite weights .* 'conv' \(conv/kernel"):
        fpga_export.export_finn(quantized, tmp_path / "bundle", input_range=(0, 1))
    assert os.listdir(tmp_path) == []


def test_finn_export_refuses_a_file_and_an_unwritable_directory_before_working(
    tmp_path, monkeypatch
):
    fpga_export = pytest.importorskip("fpga_export")
    from fpga_export import export as finn_export

    inp = keras.Input((4, 4, 1))
    flat = L.Flatten()(L.Conv2D(2, 3, activation="relu", name="conv")(inp))
    quantized = uniq_tf.quantize_model(keras.Model(inp, L.Dense(2, name="fc")(flat)))
    a_file = tmp_path / "bundle"
    a_file.write_text("not a bundle")
    with pytest.raises(FileExistsError, match="is a file, not a bundle directory"):
        fpga_export.export_finn(quantized, a_file, overwrite=True, input_range=(0, 1))
    assert a_file.read_text() == "not a bundle"
    monkeypatch.setattr(finn_export.os, "access", lambda path, mode: False)
    monkeypatch.setattr(finn_export.uniq_tf, "strip_quantization", None)  # no work before
    with pytest.raises(PermissionError, match=r"directory .* is not writable"):
        fpga_export.export_finn(quantized, tmp_path / "new" / "bundle", input_range=(0, 1))


def test_finn_notes_are_one_line_per_cause():
    from fpga_export.export import summarize_notes

    notes = [f"'conv{i}' has float weights and does not become a FINN compute layer"
             for i in range(8)] + ["'r': FINN does not map a Reshape", "no layer named"]
    assert summarize_notes(notes) == [
        "- 'conv0', 'conv1', 'conv2', 'conv3', 'conv4' and 3 more has float weights and does "
        "not become a FINN compute layer",
        "- 'r': FINN does not map a Reshape",
        "- no layer named",
    ]


def test_finn_cost_cross_check_can_be_skipped(tmp_path, monkeypatch):
    fpga_export = pytest.importorskip("fpga_export")
    from fpga_export import export as finn_export

    inp = keras.Input((4, 4, 1))
    flat = L.Flatten()(L.Conv2D(2, 3, activation="relu", name="conv")(inp))
    quantized = uniq_tf.quantize_model(keras.Model(inp, L.Dense(2, name="fc")(flat)))
    uniq_tf.calibrate_activations(quantized, [np.ones((2, 4, 4, 1), "float32")], verbose=False)

    def never(*args, **kwargs):
        raise AssertionError("inference_cost ran")

    monkeypatch.setattr(finn_export, "inference_cost", never)
    result = fpga_export.export_finn(quantized, tmp_path / "bundle", cost_check=False,
        input_range=(0, 1))
    assert result.descriptor["totals"]["qonnx_inference_cost"] is None
    assert "qonnx inference_cost: not run" in (tmp_path / "bundle" / "README.md").read_text()


def test_finn_parity_check_refuses_non_finite_outputs():
    check = pytest.importorskip("fpga_export.check")
    good = np.eye(3, dtype="float32")
    assert check.compare(good, good) == {"top1_agreement": 1.0, "max_abs_diff": 0.0}
    exported = good.copy()
    exported[0, 0] = np.nan  # argmax of [nan, 0, 0] is 0: the old check counted it as agreeing
    with pytest.raises(ValueError, match="exported outputs hold 1 non-finite"):
        check.compare(good, exported)
