"""The FPGA weight grid: snapping in training (``grid_bits``, ``uniq_tf.set_grid_bits``) and the
export's width chosen by measured accuracy (``weight_grid_bits="auto"``).

The demo CNN (uniq_tf.models.small_cnn) is trained W4A8 on the 8x8 digits once per module
(5 float epochs, 2 quantized). Measured when written: the data-free rule gives B = 10 for every
layer; "auto" (top-1 agreement, tolerance 0.5%, test split) gives conv1 5, conv2/conv3/fc 4 at
99.8% agreement; after two epochs of grid-aware fine-tuning at B = b + 1 = 5 the bundle's
logits are the Keras model's to 0.005 (without the snapping, the same B is 1.6 off).
"""

import json

import numpy as np
import pytest

import fpga_export
import uniq_tf
from fpga_export import check, grid
from uniq_tf import kquantile, models
from uniq_tf._keras import keras, tf

DIGITS_INPUT = {"input_bits": 5, "input_scale": 1 / 16, "cost_check": False}
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def trained(digits):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)  # Python, NumPy and TF: the parity margins below depend on it
    x_train, y_train, _, _ = digits
    model = models.small_cnn()
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    quantized = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
    uniq_tf.calibrate_activations(quantized, [x_train[:512]], verbose=False)
    quantized.compile(keras.optimizers.Adam(5e-4), LOSS)
    quantized.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return quantized


def _copy(model):
    with uniq_tf.quantize_scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(keras.optimizers.Adam(5e-4), LOSS, metrics=["accuracy"])
    return copy


def _tiny_model():
    inp = keras.Input((6, 6, 1))
    h = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(8, 3, name="conv")(inp))
    out = keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h))
    quantized = uniq_tf.quantize_model(keras.Model(inp, out), 4, 8)
    uniq_tf.set_weight_mode(quantized, uniq_tf.Mode.QUANTIZED)
    return quantized


# ---------------------------------------------------------------------------- the grid math


@pytest.mark.parametrize("grid_bits", [2, 4, 5, 8, 12])
def test_snap_to_grid_is_the_best_scale_on_the_grid(grid_bits):
    rng = np.random.default_rng(grid_bits)
    levels = np.sort(rng.normal(0.1, 0.5, (3, 16)), axis=1)
    values, scale, ints = (t.numpy() for t in kquantile.snap_to_grid(levels, grid_bits))
    big_n = 2 ** (grid_bits - 1) - 1
    assert np.array_equal(ints, np.round(ints)) and np.abs(ints).max() <= big_n
    np.testing.assert_allclose(values, ints * scale[:, None], rtol=1e-12)
    # the largest level sits on the grid, and no candidate scale s = max|l| / t is better
    np.testing.assert_allclose(np.abs(values).max(1), np.abs(levels).max(1), rtol=1e-12)
    error = np.abs(values - levels).max(1)
    for t in range(max(1, big_n // 2), big_n + 1):
        s = np.abs(levels).max(1, keepdims=True) / t
        other = np.abs(np.clip(np.round(levels / s), -big_n, big_n) * s - levels).max(1)
        assert np.all(error <= other + 1e-12)
    exported = grid.snap_rows(levels, grid_bits)  # the exporter calls the same function
    assert np.array_equal(exported.levels, ints) and np.allclose(exported.values(), values)


def test_quantizer_grid_bits_is_validated_and_saved():
    quantizer = uniq_tf.KQuantileWeightQuantizer(4, grid_bits=5)
    config = quantizer.get_config()
    assert config["grid_bits"] == 5
    assert uniq_tf.KQuantileWeightQuantizer(**config) == quantizer
    assert uniq_tf.KQuantileWeightQuantizer(4) != quantizer
    for bad in (3, 17, True, 4.5):
        with pytest.raises(ValueError, match=r"4\.\.16"):
            uniq_tf.KQuantileWeightQuantizer(4, grid_bits=bad)
    with pytest.raises(ValueError, match=r"2\.\.16"):
        uniq_tf.KQuantileWeightQuantizer(1, grid_bits=1)


def test_set_grid_bits_snaps_the_forward_pass_and_codebooks():
    model = _tiny_model()
    x = np.random.default_rng(0).uniform(0, 1, (16, 6, 6, 1)).astype(np.float32)
    before = model.predict(x, verbose=0)
    plain = uniq_tf.get_codebooks(model)
    assert uniq_tf.set_grid_bits(model, 4) == {"conv": 4, "fc": 4}
    after = model.predict(x, verbose=0)  # the cached predict function was reset
    assert not np.allclose(before, after)
    codebooks = uniq_tf.get_codebooks(model)
    stripped = uniq_tf.strip_quantization(model)
    for key, codebook in codebooks.items():
        assert codebook.grid_bits == 4
        assert np.array_equal(codebook.indices, plain[key].indices)
        on_grid = grid.snap_rows(np.atleast_2d(codebook.levels), 4)
        assert on_grid.error.max() <= 1e-6 * np.abs(codebook.levels).max()
        assert not np.allclose(codebook.levels, plain[key].levels)
        np.testing.assert_array_equal(stripped.get_layer(key).kernel.numpy(),
                                      codebook.dequantize())
    # the Keras forward pass computes with exactly those kernels
    copy = check.float_weight_copy(model)
    check.set_kernels(copy, codebooks, {k: c.dequantize() for k, c in codebooks.items()})
    np.testing.assert_allclose(copy.predict(x, verbose=0), after, atol=1e-6)
    with uniq_tf.quantize_scope():  # saved with the model's config
        clone = keras.models.clone_model(model)
    assert {c.grid_bits for c in uniq_tf.get_codebooks(clone).values()} == {4}
    uniq_tf.set_grid_bits(model, None)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-6)


def test_set_grid_bits_errors_name_the_layer():
    model = uniq_tf.quantize_model(keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="d1"), keras.layers.Dense(2, name="d2")]),
        4, 8, layer_bits={"d2": (6, None)})
    with pytest.raises(ValueError, match=r"layer 'd2'.*6\.\.16"):
        uniq_tf.set_grid_bits(model, 5)
    assert {c.grid_bits for c in uniq_tf.get_codebooks(model).values()} == {None}
    assert uniq_tf.set_grid_bits(model, 5, layers=["d1"]) == {"d1": 5}
    with pytest.raises(ValueError, match=r"No quantized layers named \['d3'\]"):
        uniq_tf.set_grid_bits(model, 5, layers=["d3"])


# ---------------------------------------------------------------------------- on the demo CNN


def test_auto_lowers_grid_bits_and_keeps_parity(trained, digits, tmp_path):
    _, _, x_test, y_test = digits
    default = fpga_export.export_finn(trained, tmp_path / "default", **DIGITS_INPUT)
    # validation_data alone selects "auto" (the default of weight_grid_bits=None with data)
    result = fpga_export.export_finn(
        trained, tmp_path / "auto", validation_data=x_test, validation_tolerance=0.005,
        **DIGITS_INPUT)
    fallback = {row["name"]: row["weight_grid_bits"] for row in default.descriptor["layers"]}
    chosen = {row["name"]: row["weight_grid_bits"] for row in result.descriptor["layers"]}
    assert all(4 <= chosen[k] <= fallback[k] for k in chosen)
    assert sum(chosen.values()) < sum(fallback.values())
    assert np.mean(list(chosen.values())) <= 5  # B = 10 data-free; the target is b + 1
    on_disk = json.loads((tmp_path / "auto" / "descriptor.json").read_text())
    selection = on_disk["weight_grid"]["selection"]
    assert selection["metric"] == "agreement" and selection["samples"] == len(x_test)
    assert selection["fallback"]["bits"] == fallback and selection["chosen"]["bits"] == chosen
    assert {row["codebook"]["grid_rule"] for row in on_disk["layers"]} == {"validation"}
    # the ONNX graph agrees with the Keras model as the search measured it would
    exported = check.predict(tmp_path / "auto", x_test)
    agreement = check.compare(trained.predict(x_test, verbose=0), exported)["top1_agreement"]
    assert agreement >= 1 - 0.005
    assert abs(agreement - selection["chosen"]["score"]) <= 1 / len(x_test)
    readme = (tmp_path / "auto" / "README.md").read_text()
    assert "| validation |" in readme and f"{selection['chosen']['score']:.4f}" in readme


def test_auto_with_accuracy_and_loss(trained, digits, tmp_path):
    _, _, x_test, y_test = digits
    keras_accuracy = np.mean(trained.predict(x_test, verbose=0).argmax(-1) == y_test)
    result = fpga_export.export_finn(
        trained, tmp_path / "acc", weight_grid_bits="auto", validation_data=(x_test, y_test),
        validation_metric="accuracy", validation_tolerance=0.01, **DIGITS_INPUT)
    selection = result.descriptor["weight_grid"]["selection"]
    assert selection["keras"] == pytest.approx(keras_accuracy)
    exported = check.predict(tmp_path / "acc", x_test)
    assert np.mean(exported.argmax(-1) == y_test) >= keras_accuracy - 0.01
    result = fpga_export.export_finn(
        trained, tmp_path / "loss", weight_grid_bits="auto", validation_data=(x_test, y_test),
        validation_metric="loss", validation_tolerance=0.05, **DIGITS_INPUT)
    selection = result.descriptor["weight_grid"]["selection"]
    assert selection["keras"] == pytest.approx(trained.evaluate(x_test, y_test, verbose=0),
                                               rel=1e-4)
    assert selection["chosen"]["score"] <= 1.05 * selection["keras"]


def test_auto_arguments_are_checked(trained, digits, tmp_path):
    x_test = digits[2]
    for kwargs, match in (
        ({"weight_grid_bits": "auto"}, "pass validation_data"),
        ({"validation_data": x_test, "weight_grid_bits": 5}, 'only with weight_grid_bits="auto"'),
        ({"weight_grid_bits": "best"}, 'weight_grid_bits \\(or "auto"\\)'),
        ({"weight_grid_bits": "auto", "validation_data": x_test,
          "validation_metric": "accuracy"}, "needs labels"),
        ({"weight_grid_bits": "auto", "validation_data": x_test,
          "validation_metric": "top5"}, "validation_metric must be one of"),
    ):
        with pytest.raises(ValueError, match=match):
            fpga_export.export_finn(trained, tmp_path / "b", **kwargs, **DIGITS_INPUT)
    assert not (tmp_path / "b").exists()


def test_given_codebooks_replace_the_models(tmp_path):
    """A uniform per-channel 4-bit grid (what TFMOT's narrow-range quantizer gives) exports at
    B = 4 exactly, its kernels as given."""
    model = _tiny_model()
    own = uniq_tf.get_codebooks(model)
    rng = np.random.default_rng(0)
    given = {}
    for key, codebook in own.items():
        channels = codebook.indices.shape[-1]
        scale = rng.uniform(0.01, 0.1, channels)
        ints = rng.integers(-7, 8, codebook.indices.shape)
        levels = scale[:, None] * np.append(np.arange(-7, 8), 7)[None]  # 15 levels, top twice
        given[key] = uniq_tf.Codebook(key, "kernel", 4, levels.astype(np.float32),
                                      (ints + 7).astype(np.int32), (-1,), "uniform")
    result = fpga_export.export_finn(model, tmp_path / "u", weight_grid_bits=4,
                                     codebooks=given, **DIGITS_INPUT)
    assert {row["weight_grid_bits"] for row in result.descriptor["layers"]} == {4}
    saved = np.load(tmp_path / "u" / "codebooks.npz")
    for key, codebook in given.items():
        np.testing.assert_array_equal(saved[f"{key}/indices"], codebook.indices)
        np.testing.assert_allclose(
            saved[f"{key}/grid_levels"] * saved[f"{key}/grid_scale"][:, None], codebook.levels,
            rtol=1e-6)
    with pytest.raises(ValueError, match="codebooks must have the model's keys"):
        fpga_export.export_finn(model, tmp_path / "v", codebooks={"conv": given["conv"]},
                                **DIGITS_INPUT)


@pytest.mark.parametrize("bits", [2, 4])
def test_uniform_baseline_exports_what_tfmot_computes(bits, tmp_path):
    """bench/fpga's uniform baseline: a TFMOT uniform QAT model moved into a UNIQ layout
    exports at B = b (b + 1 for the 2-bit full range), its logits TFMOT's own."""
    from bench import peers
    from bench.fpga import train

    inp = keras.Input((6, 6, 1))
    h = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(8, 3, name="conv")(inp))
    float_model = keras.Model(inp, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h)))
    x = np.random.default_rng(0).integers(0, 17, (64, 6, 6, 1)).astype(np.float32) / 16
    uniform = peers.uniform_qat(float_model, bits, 8)
    peers.set_uniform_ranges(uniform)
    uniq_tf.calibrate_activations(uniform, [x], verbose=False)
    layout, codebooks = train.uniq_layout(uniform, float_model, bits)
    for key, codebook in codebooks.items():  # TFMOT's quantized kernel, on its own grid
        (kernel,) = [w for w in layout.weights if w.name == f"{key}/kernel:0"]
        np.testing.assert_allclose(codebook.dequantize(), kernel.numpy(), atol=1e-6)
        steps = np.diff(codebook.levels, axis=1)
        assert np.allclose(steps[:, :2**bits - 2], steps[:, :1], rtol=1e-5)
    result = fpga_export.export_finn(layout, tmp_path / "u", codebooks=codebooks, **DIGITS_INPUT)
    assert {row["weight_grid_bits"] for row in result.descriptor["layers"]} == {
        bits + (bits == 2)}
    compared = check.compare(uniform.predict(x, verbose=0), check.predict(tmp_path / "u", x))
    assert compared["top1_agreement"] >= 0.98 and compared["max_abs_diff"] <= 0.05, compared


def test_grid_aware_fine_tune_gives_parity_at_b_plus_1(trained, digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    model = _copy(trained)
    # Without the snapping, a 5-bit grid moves the logits far from the Keras model's.
    with pytest.warns(UserWarning, match="5-bit grid represents its codebook within"):
        fpga_export.export_finn(model, tmp_path / "plain", weight_grid_bits=5, **DIGITS_INPUT)
    plain = check.compare(model.predict(x_test, verbose=0), check.predict(tmp_path / "plain",
                                                                          x_test))
    assert plain["max_abs_diff"] > 0.5, plain

    uniq_tf.set_grid_bits(model, 5)
    uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    keras_out = model.predict(x_test, verbose=0)
    assert np.mean(keras_out.argmax(-1) == y_test) >= 0.97
    result = fpga_export.export_finn(model, tmp_path / "grid5", **DIGITS_INPUT)
    assert {(row["weight_grid_bits"], row["codebook"]["grid_rule"])
            for row in result.descriptor["layers"]} == {(5, "trained")}
    exported = check.predict(tmp_path / "grid5", x_test)
    tuned = check.compare(keras_out, exported)
    # Float summation order may flip an activation's rounding by a step (test_fpga_export.py).
    assert tuned["top1_agreement"] >= 0.995 and tuned["max_abs_diff"] <= 0.05, tuned
    assert np.mean(np.abs(keras_out - exported).max(axis=1) <= 1e-4) >= 0.95


@pytest.mark.slow
def test_the_command_measures_auto_widths_on_training_images(trained, tmp_path):
    """uniq-export-finn --weight_grid_bits=auto (fpga_export.cli.run) measures on the last
    VALIDATION_SIZE training images; the default is the data-free rule (B = 10 at 4 bits)."""
    from fpga_export import cli

    path = tmp_path / "q.h5"
    trained.save(path, save_format="h5")
    auto = cli.run(str(path), str(tmp_path / "auto"), weight_grid_bits="auto", verbose=False)
    rule = cli.run(str(path), str(tmp_path / "rule"), verbose=False)
    assert set(auto["grid_rules"].values()) == {"validation"}
    assert auto["grid_selection"]["samples"] == cli.VALIDATION_SIZE
    assert max(rule["grid_bits"].values()) == 10
    assert np.mean(list(auto["grid_bits"].values())) < 10


def test_auto_takes_validation_data_in_every_input_form(trained, digits, tmp_path):
    _, _, x_test, y_test = digits
    x, y = x_test[:200], y_test[:200]
    forms = {"tuple": (x, y),
             "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(64),
             "batches": [(x[:100], y[:100]), (x[100:], y[100:])]}
    chosen = {}
    for name, data in forms.items():
        result = fpga_export.export_finn(
            trained, tmp_path / name, validation_data=data, validation_metric="accuracy",
            validation_tolerance=0.01, **DIGITS_INPUT)
        selection = result.descriptor["weight_grid"]["selection"]
        assert selection["samples"] == 200
        chosen[name] = selection["chosen"]["bits"]
    assert chosen["dataset"] == chosen["tuple"] == chosen["batches"]


@pytest.mark.slow
def test_trained_on_the_grid_the_default_export_keeps_b_plus_1_with_parity(tmp_path):
    """make demo's path: uniq-train --grid_bits=5, then uniq-export-finn with its defaults."""
    from fpga_export import cli
    from uniq_tf.cli import train

    config = train.TrainConfig(float_epochs=2, stages=2, epochs_per_stage=2, final_epochs=1,
                               max_steps_per_epoch=6, calibration_steps=2, grid_bits=5,
                               output_dir=str(tmp_path / "train"), verbose=0)
    summary = train.run(config)
    assert {book["grid_bits"] for book in summary["codebooks"].values()} == {5}
    exported = cli.run(str(tmp_path / "train" / "quantized_model.h5"), str(tmp_path / "fpga"),
                       verbose=False)
    assert set(exported["grid_bits"].values()) == {5}
    assert set(exported["grid_rules"].values()) == {"trained"}
    accuracy = exported["test_accuracy"]
    assert accuracy["exported_onnx"] == accuracy["keras_quantized"]
    assert exported["check"]["keras"]["max_abs_diff"] < 1e-3
    with pytest.raises(ValueError, match=r"grid_bits must be 0 \(no grid\) or in 4..16"):
        train.validate_config(train.TrainConfig(grid_bits=3))
    with pytest.raises(ValueError, match=r"in 8..16"):
        train.validate_config(train.TrainConfig(grid_bits=5, layer_bits="fc=8:"))
