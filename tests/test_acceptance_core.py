"""Acceptance gaps of the core and BOPs issues that the per-module tests leave open.

- identity gradients inside a traced function, through the wrapped layer (not only eagerly on
  the bare quantizer);
- save/load of a nested Functional model and of SeparableConv2D (two quantized kernels);
- calibrate_activations on empty data;
- uniq-bops (uniq_tf/cli/bops.py) writes its table.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import uniq_tf
from uniq_tf import Mode
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import float_kernel
from uniq_tf.method.quantizers import KQuantileWeightQuantizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_quantize import batch, nested_model, save_and_load, small_cnn  # noqa: E402

L = keras.layers


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("mode", [Mode.NOISY, Mode.QUANTIZED])
def test_identity_gradient_inside_tf_function(mode):
    quantizer = KQuantileWeightQuantizer(3)
    variables = quantizer.build((16, 8), "w", L.Layer())
    variables["mode"].assign(int(mode))
    w = tf.Variable(np.random.default_rng(1).normal(size=(16, 8)).astype("f4"))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(16, 8)).astype("f4"))

    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            out = quantizer(w, True, variables)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, w)

    out, g = grad()
    np.testing.assert_array_equal(g.numpy(), upstream.numpy())
    assert not np.array_equal(out.numpy(), w.numpy())  # the forward pass did change w


def test_quantized_layer_gradient_equals_the_stripped_models_gradient():
    """Straight through in a real model: d loss / d float kernel of the quantized model equals
    d loss / d kernel of the plain model holding the codebook values (same forward pass)."""
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=2)
    uniq_tf.set_weight_mode(q, Mode.QUANTIZED)
    uniq_tf.set_activation_mode(q, uniq_tf.ActMode.FLOAT)  # the stripped model has none
    stripped = uniq_tf.strip_quantization(q)
    x, y = batch(8), np.arange(8) % 10
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def gradients(model, variables):
        with tf.GradientTape() as tape:
            # training=False: batch norm uses its moving statistics in both models.
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, variables)

    names = ["c1", "dw", "fc"]
    got = gradients(q, [float_kernel(q.get_layer(n), a) for n, a in
                        (("c1", "kernel"), ("dw", "depthwise_kernel"), ("fc", "kernel"))])
    want = gradients(stripped, [stripped.get_layer(n).weights[0] for n in names])
    for name, a, b in zip(names, got, want, strict=True):
        assert np.abs(b.numpy()).max() > 0, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)


# --------------------------------------------------------------------------- save and load


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5", "tf"])
def test_nested_model_save_and_load_is_bit_identical(tmp_path, fmt):
    q = uniq_tf.quantize_model(nested_model(), weight_bits=3, activation_bits=4)
    uniq_tf.calibrate_activations(q, [batch(32, 1)], verbose=False)
    uniq_tf.set_weight_mode(q, Mode.FLOAT, layers=["dw"])
    x = batch(8, 2)
    expected = q(x, training=False).numpy()
    loaded = save_and_load(q, tmp_path, fmt)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    assert uniq_tf.weight_modes(loaded) == uniq_tf.weight_modes(q)
    assert uniq_tf.weight_modes(loaded)["dw"] == Mode.FLOAT


def separable_model():
    inp = keras.Input((8, 8, 1))
    x = L.SeparableConv2D(4, 3, activation="relu", name="sep")(inp)
    return keras.Model(inp, L.Dense(3, name="fc")(L.Flatten()(x)))


@pytest.mark.parametrize("fmt", ["h5", "tf"])
def test_separable_conv_save_and_load_is_bit_identical(tmp_path, fmt):
    """A quantized SeparableConv2D is split in two wrapped layers (integration.layout), which the
    SavedModel format saves; a wrapped SeparableConv2D failed with a ValueError there."""
    q = uniq_tf.quantize_model(separable_model(), weight_bits=2)
    uniq_tf.calibrate_activations(q, [batch(8, 1)], verbose=False)
    x = batch(4, 3)
    expected = q(x, training=False).numpy()
    loaded = save_and_load(q, tmp_path, fmt)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    assert sorted(uniq_tf.get_codebooks(loaded)) == ["fc", "sep", "sep_depthwise"]
    for key, codebook in uniq_tf.get_codebooks(q).items():
        np.testing.assert_array_equal(uniq_tf.get_codebooks(loaded)[key].levels, codebook.levels)
    assert uniq_tf.get_activation_ranges(loaded) == uniq_tf.get_activation_ranges(q)


# --------------------------------------------------------------------------- calibration


def test_calibration_on_empty_data_is_an_error_and_changes_nothing():
    q = uniq_tf.quantize_model(small_cnn(), weight_bits=2)
    uniq_tf.calibrate_activations(q, [batch(16)], verbose=False)
    uniq_tf.set_activation_mode(q, uniq_tf.ActMode.FLOAT, layers=["r1"])
    ranges, modes = uniq_tf.get_activation_ranges(q), uniq_tf.activation_modes(q)
    with pytest.raises(ValueError, match="no batch"):
        uniq_tf.calibrate_activations(q, [], verbose=False)
    with pytest.raises(ValueError, match="no batch"):
        uniq_tf.calibrate_activations(q, tf.data.Dataset.from_tensor_slices(batch(4)).take(0),
                                      verbose=False)
    assert uniq_tf.get_activation_ranges(q) == ranges
    assert uniq_tf.activation_modes(q) == modes
    for steps in (0, -1, 1.5):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            uniq_tf.calibrate_activations(q, [batch(4)], steps=steps, verbose=False)


# --------------------------------------------------------------------------- BOPs report


def test_bops_report_example_writes_the_table(tmp_path):
    from absl import flags

    from uniq_tf.cli import bops as bops_report

    output = tmp_path / "bops.md"
    pairs = ["32,32", "4,8", "2,2"]
    argv = ["bops_report", "--models=resnet18", "--resolution=32", "--num_classes=10",
            f"--output={output}", *(f"--bits={p}" for p in pairs)]
    if "resolution" not in flags.FLAGS:
        bops_report._define_flags()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
        bops_report.main(argv[:1])
    finally:
        flags.FLAGS.unparse_flags()
    text = output.read_text()
    from uniq_tf import bops, models

    model = models.resnet18((32, 32, 3), 10)
    expected = {
        p: bops.summary(model, *(() if p == "32,32" else map(int, p.split(","))))
        for p in pairs
    }
    rows = [line for line in text.splitlines() if line.startswith("| ResNet-18 |")]
    assert len(rows) == 4  # size, BOPs (paper), BOPs (simple), weight memory
    paper = rows[1].strip("| ").split(" | ")[1:]
    simple = rows[2].strip("| ").split(" | ")[1:]
    assert paper == [f"{expected[p].total_bops / 1e9:,.2f}" for p in pairs]
    assert simple == [f"{expected[p].total_bops_simple / 1e9:,.2f}" for p in pairs]
    assert "| model | 32,32 | 4,8 | 2,2 |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bops.md"]  # no temporary file


def test_committed_bops_doc_has_every_model_and_bit_pair():
    text = (ROOT / "docs" / "bops.md").read_text()
    header = "| model | 32,32 | 8,8 | 5,8 | 4,8 | 4,4 | 3,3 | 2,4 | 2,2 |"
    assert text.count(header) == 3  # paper BOPs, simple BOPs, weight memory
    for title in ("ResNet-18", "ResNet-34", "ResNet-50", "MobileNet v1"):
        assert sum(line.startswith(f"| {title} |") for line in text.splitlines()) == 4
