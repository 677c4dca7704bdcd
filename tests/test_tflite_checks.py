"""The TFLite exporter's checks never pass a wrong file: int8 outputs within steps of the
file's output quantization (regressions, sigmoids and logits alike), near ties and rare
outliers, non-finite data and outputs, constant or ill-fitting representative data, shared
layers, integer inputs, the converter's own message.

Small models only (a 6-16-1 regression MLP, a sigmoid MLP, a tiny conv net): every export here
takes about a second.
"""

import os

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


def test_a_batch_that_does_not_fit_is_reported_with_its_own_shape(tmp_path):
    quantized = uniq_tf.quantize_model(conv_net())
    with pytest.raises(ValueError, match=r"a batch of shape \(4, 8, 8\) does not fit"):
        tflite_export.export_tflite(quantized, tmp_path / "m.tflite", "int8",
                                    np.zeros((4, 8, 8), "float32"))


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
