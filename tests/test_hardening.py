"""Issue 17: exports never pass a wrong file, and bad input gets a clear error.

Small models only (a 6-16-1 regression MLP, a sigmoid MLP, a tiny conv net): every export here
takes about a second.
"""

import os
import warnings

import numpy as np
import pytest

import tflite_export
import uniq_tf
from tflite_export import export as export_module
from uniq_tf import atomic
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import float_kernel

L = keras.layers


def _inputs(count=64, width=6, scale=10.0, seed=0):
    return (np.random.default_rng(seed).uniform(0, 1, (count, width)) * scale).astype("float32")


def mlp(activation=None):
    """6 -> 16 (ReLU) -> 1: a regression (activation None) or a sigmoid classifier."""
    inp = keras.Input((6,))
    hidden = L.Dense(16, activation="relu", name="hidden")(inp)
    return keras.Model(inp, L.Dense(1, activation=activation, name="out")(hidden), name="mlp")


def calibrated(model, x):
    quantized = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
    uniq_tf.calibrate_activations(quantized, [x], verbose=False)
    return quantized


def conv_net(classes=10, name="conv"):
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, activation="relu", name="conv")(inp)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(classes, activation="softmax", name="fc")(x), name=name)


def _nothing_written(directory):
    return not [p for p in os.listdir(directory)
                if p.endswith(".tflite") or atomic.TEMP_NAME.fullmatch(p)]


# ---------------------------------------------------------------- 1. int8 numeric check


def test_int8_regression_is_checked_against_the_output_step(tmp_path):
    x = _inputs()
    quantized = calibrated(mlp(), x)
    path = tmp_path / "r.tflite"
    # representative data 100x too small: the input and output ranges clip (off by ~6)
    with pytest.raises(tflite_export.VerificationError, match=r"max \|diff\| .* exceeds") as err:
        tflite_export.export_tflite(quantized, path, "int8", x / 100, samples=x)
    assert "outside the file's input range" in str(err.value)
    # 100x too large: the input keeps 2 or 3 of its 256 steps
    with pytest.raises(tflite_export.VerificationError, match=r"span only .* input steps"):
        tflite_export.export_tflite(quantized, path, "int8", x * 100, samples=x)
    assert _nothing_written(tmp_path)
    report = tflite_export.export_tflite(quantized, path, "int8", x, samples=x)
    got = tflite_export.predict(path, x)
    want = quantized.predict(x, verbose=0)
    assert report.output_step > 0
    assert report.tolerance == pytest.approx(export_module.MAX_STEPS * report.output_step)
    assert np.abs(got - want).max() == pytest.approx(report.max_abs_diff)
    assert report.max_abs_diff <= report.tolerance and report.outliers == 0
    assert "exceeded on 0.0% of the samples" in report.summary()
    assert "0.00% outside the range" in report.summary() and report.input_clipped == 0


def test_int8_allows_a_rare_outlier_sample_only(tmp_path, monkeypatch):
    x = _inputs(128)
    quantized = calibrated(mlp(), x)
    real_predict = export_module.runtime.predict
    for rows, fails in ((1, False), (2, True)):
        def predict(path, samples, rows=rows):
            out = real_predict(path, samples)
            out[:rows] += 100.0
            return out

        monkeypatch.setattr(export_module.runtime, "predict", predict)
        path = tmp_path / f"{rows}.tflite"
        if fails:
            with pytest.raises(tflite_export.VerificationError, match=r"on 1\.6% of the samples"):
                tflite_export.export_tflite(quantized, path, "int8", x)
            assert not path.exists()
        else:
            report = tflite_export.export_tflite(quantized, path, "int8", x)
            assert report.outliers == 1 / 128 and report.max_abs_diff > 90


def spread_sigmoid(x):
    """The sigmoid MLP with its logits on ``x`` scaled to mean 0 and standard deviation 2."""
    model = mlp("sigmoid")
    hidden = keras.Model(model.input, model.get_layer("hidden").output).predict(x, verbose=0)
    kernel, bias = model.get_layer("out").get_weights()
    logits = hidden @ kernel + bias
    scale = 2 / logits.std()
    model.get_layer("out").set_weights([kernel * scale, (bias - logits.mean()) * scale])
    return model


def test_int8_sigmoid_output_is_right_or_refused(tmp_path):
    x = _inputs()
    quantized = calibrated(spread_sigmoid(x), x)
    path = tmp_path / "s.tflite"
    report = tflite_export.export_tflite(quantized, path, "int8", x, samples=x)
    got = tflite_export.predict(path, x)[:, 0]
    want = quantized.predict(x, verbose=0)[:, 0]
    # the learned range of the sigmoid output was written onto its pre-activation (a file that
    # said sigmoid(1) = 0.73 for every input); it now belongs to the sigmoid output only
    assert np.abs(got - want).max() <= report.tolerance <= 8 * 0.25 * 20 / 255
    assert np.corrcoef(got, want)[0, 1] > 0.99 and want.std() > 0.2
    path.unlink()
    with pytest.raises(tflite_export.VerificationError, match="exceeds the tolerance"):
        tflite_export.export_tflite(quantized, path, "int8", x / 100, samples=x)
    assert _nothing_written(tmp_path)


# ---------------------------------------------------------------- 5. near ties, uncalibrated


def near_tie_classifier():
    """Softmax outputs 1e-5 apart, class 9 first: an int8 output step (1/256) erases the order."""
    model = conv_net()
    kernel, _ = model.get_layer("fc").get_weights()
    model.get_layer("fc").set_weights([0 * kernel, np.arange(10, dtype="float32") * 1e-4])
    return model


def test_near_ties_do_not_fail_the_agreement_check(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype("float32")
    quantized = uniq_tf.quantize_model(near_tie_classifier())
    uniq_tf.calibrate_activations(quantized, [x], verbose=False)
    report = tflite_export.export_tflite(quantized, tmp_path / "t.tflite", "int8", x)
    assert report.top1_agreement == 0.0  # the old check refused it
    assert report.clear_rows == 0 and report.clear_agreement is None
    assert report.max_abs_diff <= report.output_step


def test_uncalibrated_failure_says_calibrating_would_help(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype("float32")
    quantized = uniq_tf.quantize_model(conv_net())
    with pytest.warns(UserWarning, match="never calibrated"), pytest.raises(
        tflite_export.VerificationError, match=r"calibrate_activations\(model, data\)"
    ):
        tflite_export.export_tflite(quantized, tmp_path / "u.tflite", "int8", x * 100, samples=x)
    assert _nothing_written(tmp_path)


# ---------------------------------------------------------------- 2. non-finite data


def test_non_finite_data_and_outputs_are_errors(tmp_path):
    quantized = uniq_tf.quantize_model(conv_net())
    nan = np.full((8, 8, 8, 1), np.nan, "float32")
    good = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype("float32")
    with pytest.raises(ValueError, match=r"representative_data holds non-finite .* 8 of 8"):
        tflite_export.export_tflite(quantized, tmp_path / "n.tflite", "int8", nan)
    good_then_inf = good.copy()
    good_then_inf[3, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"samples holds non-finite .* 1 of 8 .*\[3\]"):
        tflite_export.export_tflite(quantized, tmp_path / "n.tflite", samples=good_then_inf)
    inp = keras.Input((4,))
    log = L.Lambda(lambda t: tf.math.log(t), name="log")(L.Dense(3, name="fc")(inp))
    negative = uniq_tf.quantize_model(keras.Model(inp, log))
    with pytest.raises(tflite_export.VerificationError, match="non-finite outputs"):
        tflite_export.export_tflite(negative, tmp_path / "n.tflite", samples=good[:, :4, 0, 0])
    assert _nothing_written(tmp_path)


# ---------------------------------------------------------------- 3. non-finite weights


def test_non_finite_weights_are_named(tmp_path):
    model = mlp()
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[0, 0] = np.nan
    model.get_layer("hidden").set_weights([kernel, bias])
    with pytest.raises(ValueError, match=r"non-finite weights .* 'hidden' \(hidden/kernel"):
        uniq_tf.quantize_model(model)
    quantized = uniq_tf.quantize_model(mlp())
    variable = float_kernel(quantized.get_layer("out"))
    variable.assign(tf.fill(variable.shape, np.inf))
    for call in (
        lambda: uniq_tf.get_codebooks(quantized),
        lambda: tflite_export.export_tflite(quantized, tmp_path / "w.tflite"),
    ):
        with pytest.raises(ValueError, match=r"non-finite weights .* 'out' \(out/kernel"):
            call()
    assert os.listdir(tmp_path) == []


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


# ---------------------------------------------------------------- 4. calibration on an array


def test_calibrating_on_an_array_batches_it():
    x = np.random.default_rng(0).uniform(0, 1, (80, 8, 8, 1)).astype("float32")
    quantized = uniq_tf.quantize_model(conv_net())
    from_batches = uniq_tf.calibrate_activations(
        quantized, [x[i : i + 32] for i in range(0, 80, 32)], verbose=False
    )
    from_array = uniq_tf.calibrate_activations(quantized, x, verbose=False)
    assert from_array == from_batches
    assert from_array["conv"][1] > 0.1


# ---------------------------------------------------------------- 8. constant data, LiteRT


def test_constant_representative_data_is_refused_before_converting(tmp_path):
    quantized = uniq_tf.quantize_model(mlp("sigmoid"))
    with pytest.raises(ValueError, match=r"single value \(0\.0\) in all of its 8 samples"):
        tflite_export.export_tflite(quantized, tmp_path / "z.tflite", "int8",
                                    np.zeros((8, 6), "float32"))
    assert os.listdir(tmp_path) == []


def test_a_file_litert_cannot_run_is_a_verification_error(tmp_path, monkeypatch):
    def fail(path, x):
        raise RuntimeError("Node number 3 (TfLiteXNNPackDelegate) failed to prepare.")

    monkeypatch.setattr(export_module.runtime, "predict", fail)
    quantized = uniq_tf.quantize_model(mlp())
    with pytest.raises(tflite_export.VerificationError, match="LiteRT cannot run .* prepare\\. "):
        tflite_export.export_tflite(quantized, tmp_path / "r.tflite", samples=_inputs(8))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- 9. quantizing twice


def test_quantizing_a_quantized_model_says_so_and_nothing_else():
    quantized = uniq_tf.quantize_model(mlp())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="is already quantized"):
            uniq_tf.quantize_model(quantized)
    assert not [w for w in record if "left in float" in str(w.message)
                or "leaves these layers in float" in str(w.message)]


# ---------------------------------------------------------------- 15. shapes in errors


def test_a_batch_that_does_not_fit_is_reported_with_its_own_shape(tmp_path):
    quantized = uniq_tf.quantize_model(conv_net())
    with pytest.raises(ValueError, match=r"a batch of shape \(4, 8, 8\) does not fit"):
        tflite_export.export_tflite(quantized, tmp_path / "m.tflite", "int8",
                                    np.zeros((4, 8, 8), "float32"))


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


# ---------------------------------------------------------------- 6. a shared layer


def test_a_shared_layer_exports_with_its_kernel_found(tmp_path):
    inp = keras.Input((8,))
    shared = L.Dense(8, activation="relu", name="shared")
    model = keras.Model(inp, L.Dense(2, name="fc")(shared(shared(inp))))
    quantized = uniq_tf.quantize_model(model)
    x = _inputs(32, 8, 1.0)
    uniq_tf.calibrate_activations(quantized, [x], verbose=False)
    for mode in ("float", "int8"):
        report = tflite_export.export_tflite(quantized, tmp_path / f"{mode}.tflite", mode, x)
        check = report.kernels["shared"]
        assert check.ok and check.tensor is not None and check.max_distinct_per_channel <= 16


# ---------------------------------------------------------------- 7. integer inputs


def test_token_inputs_stay_integer_in_every_mode(tmp_path):
    inp = keras.Input((20,), dtype="int32")
    x = L.Conv1D(8, 3, activation="relu", name="c1d")(L.Embedding(50, 8, name="emb")(inp))
    model = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling1D()(x)))
    with pytest.warns(UserWarning, match=r"in float .*emb \(Embedding\)"):
        quantized = uniq_tf.quantize_model(model)
    tokens = np.random.default_rng(0).integers(0, 50, (64, 20)).astype("int32")
    uniq_tf.calibrate_activations(quantized, [tokens], verbose=False)
    for mode in ("int8", "float", "dynamic"):
        report = tflite_export.export_tflite(quantized, tmp_path / f"{mode}.tflite", mode,
                                             tokens if mode == "int8" else None, samples=tokens)
        assert report.input_dtype == "int32" and report.max_abs_diff <= report.tolerance
        assert set(report.kernels) == {"c1d", "fc"}


def test_converter_message_is_kept_when_no_line_says_error():
    from tflite_export.convert import describe_converter_error

    message = describe_converter_error(
        RuntimeError("Some ops are not supported\nTF Select ops: Foo"), mlp(), "int8"
    )
    assert message.endswith("Converter says: Some ops are not supported | TF Select ops: Foo")


# ---------------------------------------------------------------- 13. FINN export's slow parts


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


# ---------------------------------------------------------------- 15. the scripts' errors


def test_a_script_error_is_one_line_not_the_usage(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "tflite_export.cli", f"--model={tmp_path / 'missing.h5'}"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    lines = [line for line in result.stderr.splitlines()
             if not line.startswith(("WARNING: All log", "E0000", "W0000", "I0000"))]
    assert result.returncode == 1
    assert lines == [f"--model {str(tmp_path / 'missing.h5')!r} does not exist; run "
                     "uniq-train first. (pass --helpshort to see the flags)"], lines


def test_finn_parity_check_refuses_non_finite_outputs():
    check = pytest.importorskip("fpga_export.check")
    good = np.eye(3, dtype="float32")
    assert check.compare(good, good) == {"top1_agreement": 1.0, "max_abs_diff": 0.0}
    exported = good.copy()
    exported[0, 0] = np.nan  # argmax of [nan, 0, 0] is 0: the old check counted it as agreeing
    with pytest.raises(ValueError, match="exported outputs hold 1 non-finite"):
        check.compare(good, exported)


# ---------------------------------------------------------------- 10. saved quantized models


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_load_quantized_names_the_keras_format(tmp_path):
    from uniq_tf.integration.saving import load_quantized

    quantized = uniq_tf.quantize_model(mlp())
    x = _inputs(4)
    quantized.save(tmp_path / "m.h5")
    loaded = load_quantized(tmp_path / "m.h5")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), quantized.predict(x, verbose=0))
    quantized.save(tmp_path / "m.keras")  # saves; tf_keras cannot load it back
    with pytest.raises(ValueError, match=r"\.keras format, which cannot load .* as \.h5"):
        load_quantized(tmp_path / "m.keras")
    with pytest.raises(FileNotFoundError, match="No saved model"):
        load_quantized(tmp_path / "missing.h5")


def test_relu_quantizers_start_and_stay_at_zero_without_calibration(tmp_path):
    """Item 12: a fine-tune without calibrate_activations must not leave a ReLU's range below
    0 (a nonzero zero point FINN cannot map); a leaky ReLU keeps its signed range."""
    inp = keras.Input((6,))
    x = L.Dense(8, activation="relu", name="fused")(inp)
    x = L.ReLU(name="plain")(L.Dense(8, name="d2")(x))
    x = L.ReLU(negative_slope=0.1, name="leaky")(L.Dense(8, name="d3")(x))
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    quantized = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
    start = uniq_tf.get_activation_ranges(quantized)
    assert start["fused"][0] == start["plain"][0] == 0.0 and start["leaky"][0] == -6.0
    quantized.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_train = _inputs(128)
    quantized.fit(x_train, (x_train[:, 0] > 5).astype("int32"), epochs=2, verbose=0)
    ranges = uniq_tf.get_activation_ranges(quantized)
    assert ranges["fused"][0] == ranges["plain"][0] == 0.0
    assert ranges["fused"][1] != 6.0  # the maximum still tracks the data
    assert ranges["leaky"][0] < 0.0
    path = str(tmp_path / "m.h5")
    quantized.save(path)
    with uniq_tf.quantize_scope():
        loaded = keras.models.load_model(path, compile=False)
    assert uniq_tf.get_activation_ranges(loaded) == ranges
    configs = {w.layer.name: w.quantize_config.get_output_quantizers(w.layer)[0].non_negative
               for w in uniq_tf.integration.inspection.wrappers(loaded) if w.quantize_config
               .get_output_quantizers(w.layer)}
    assert configs == {"fused": True, "plain": True, "leaky": False}
