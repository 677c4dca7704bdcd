"""tflite_export: float / dynamic / int8 TFLite files checked in LiteRT, packed format, errors.

A small CNN (conv-BN-ReLU x2, pool, dense) is trained on the 8x8 digits, quantized W4A8,
calibrated and fine-tuned once per module; the exports of it are shared by the tests.
"""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tflite_export
import uniq_tf
from tflite_export import export as export_module
from tflite_export.runtime import Interpreter, OpResolverType, constant_tensors
from tflite_export.samples import as_samples
from uniq_tf import atomic
from uniq_tf._keras import keras, tf
from uniq_tf.method.codebook import pack_indices, unpack_indices

L = keras.layers
BITS = 4
LEVELS = 2**BITS


def digits_cnn():
    inp = keras.Input((8, 8, 1), name="image")
    x = inp
    for i, filters in ((1, 16), (2, 32)):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = L.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = L.ReLU(name=f"relu{i}")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    return keras.Model(inp, L.Dense(10, name="logits")(x), name="digits_cnn")


def _compile(model, learning_rate):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """The W4A8 model and its float and int8 exports (written once for the module)."""
    keras.backend.clear_session()
    tf.random.set_seed(1)
    x_train, y_train, x_test, y_test = digits
    model = digits_cnn()
    _compile(model, 1e-2)
    model.fit(x_train, y_train, epochs=6, batch_size=32, verbose=0)
    quantized = uniq_tf.quantize_model(model, weight_bits=BITS, activation_bits=8)
    uniq_tf.calibrate_activations(quantized, [x_train[i : i + 256] for i in range(0, 1024, 256)],
                                  verbose=False)
    _compile(quantized, 1e-3)
    quantized.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("tflite")
    return {
        "model": quantized,
        "stripped": uniq_tf.strip_quantization(quantized),
        "dir": out,
        "float": tflite_export.export_tflite(quantized, out / "f.tflite", "float", samples=x_test),
        "int8": tflite_export.export_tflite(
            quantized, out / "i8.tflite", "int8", x_train, samples=x_test,
            calibration_samples=len(x_train),
        ),
    }


def _kernel_tensors(path) -> dict[str, np.ndarray]:
    """Constant tensors of a TFLite file, read with the LiteRT interpreter, by name."""
    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    return {name: d["value"] for name, d in constant_tensors(interpreter).items()}


def _tensor_of(tensors, layer, ndim):
    found = [v for n, v in tensors.items() if f"/{layer}/" in n and v.ndim == ndim]
    assert len(found) == 1, (layer, list(tensors))
    return found[0]


def _no_temp_files(directory):
    return not [p for p in os.listdir(directory) if atomic.TEMP_NAME.fullmatch(p)]


# ---------------------------------------------------------------- float


def test_float_kernels_hold_the_codebook_per_channel_after_bn_folding(trained):
    model, stripped = trained["model"], trained["stripped"]
    tensors = _kernel_tensors(trained["dir"] / "f.tflite")
    codebooks = uniq_tf.get_codebooks(model)
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        gamma, _, _, variance = stripped.get_layer(bn).get_weights()
        scale = gamma / np.sqrt(variance + stripped.get_layer(bn).epsilon)
        kernel = _tensor_of(tensors, conv, 4)  # OHWI
        levels = codebooks[conv].levels
        for c in range(kernel.shape[0]):
            values = np.unique(kernel[c])
            assert len(values) <= LEVELS
            # every value is a codebook level times the channel's batch-norm scale
            nearest = np.abs(values[:, None] / scale[c] - levels[None, :]).min(axis=1)
            assert nearest.max() <= 1e-5 * np.abs(levels).max(), (conv, c)
    # no batch norm after the dense layer: its kernel is the codebook, bit for bit
    dense = _tensor_of(tensors, "logits", 2)
    np.testing.assert_array_equal(dense, codebooks["logits"].dequantize().T)
    assert set(np.unique(dense)) <= set(codebooks["logits"].levels)
    for check in trained["float"].kernels.values():
        assert check.ok and check.max_distinct_per_channel <= LEVELS
        assert check.max_rel_error < 1e-6


def test_float_outputs_match_the_stripped_model(trained, digits):
    x_test = digits[2]
    got = tflite_export.predict(trained["dir"] / "f.tflite", x_test)
    want = trained["stripped"].predict(x_test, verbose=0)
    # float32 round-off of the folded batch norm: 1e-5 relative to the logits' magnitude
    bound = 1e-5 * max(1.0, np.abs(want).max())
    print(f"float max |diff| {np.abs(got - want).max():.3g}, logits up to {np.abs(want).max():.3g}")
    assert np.abs(got - want).max() <= bound
    report = trained["float"]
    assert report.max_abs_diff <= bound and report.samples_checked == len(x_test)
    assert report.reference == "stripped Keras model" and report.input_dtype == "float32"


# ---------------------------------------------------------------- int8


def test_int8_kernels_keep_at_most_2b_values_per_channel(trained):
    tensors = _kernel_tensors(trained["dir"] / "i8.tflite")
    for layer, ndim in (("conv1", 4), ("conv2", 4), ("logits", 2)):
        kernel = _tensor_of(tensors, layer, ndim)
        assert kernel.dtype == np.int8
        per_channel = [len(np.unique(kernel[c])) for c in range(kernel.shape[0])]
        assert max(per_channel) <= LEVELS, (layer, per_channel)
    assert all(c.ok and c.dtype == "int8" for c in trained["int8"].kernels.values())


def test_int8_agrees_with_the_quantized_keras_model_on_digits(trained, digits):
    _, _, x_test, y_test = digits
    keras_logits = trained["model"].predict(x_test, verbose=0)
    tflite_logits = tflite_export.predict(trained["dir"] / "i8.tflite", x_test)
    agreement = np.mean(tflite_logits.argmax(1) == keras_logits.argmax(1))
    keras_accuracy = np.mean(keras_logits.argmax(1) == y_test)
    tflite_accuracy = np.mean(tflite_logits.argmax(1) == y_test)
    print(f"int8 agreement {agreement:.4f}, accuracy keras {keras_accuracy:.4f} "
          f"tflite {tflite_accuracy:.4f}, max diff {trained['int8'].max_abs_diff:.4f}")
    assert keras_accuracy > 0.9
    assert agreement >= 0.99
    assert abs(tflite_accuracy - keras_accuracy) <= 0.005
    report = trained["int8"]
    assert report.top1_agreement == pytest.approx(agreement)
    assert (report.input_dtype, report.output_dtype) == ("int8", "int8")


def test_int8_uses_the_learned_activation_ranges(trained):
    learned = uniq_tf.get_activation_ranges(trained["model"])
    assert set(learned) == {"relu1", "relu2"}
    interpreter = Interpreter(model_path=str(trained["dir"] / "i8.tflite"))
    by_name = {d["name"]: d for d in interpreter.get_tensor_details()}
    uses = {u.layer: u for u in trained["int8"].activation_ranges}
    for layer, (lo, hi, bits) in learned.items():
        use = uses[layer]
        assert use.used == "learned" and use.learned == (lo, hi)
        scale, zero_point = by_name[use.tensor]["quantization"]
        assert lo == 0.0 and zero_point == -128
        assert scale == pytest.approx(hi / (2**bits - 1), rel=1e-6)


def test_int8_float_io_and_calibrated_ranges(trained, digits, tmp_path):
    x_train, _, x_test, _ = digits
    report = tflite_export.export_tflite(
        trained["model"], tmp_path / "m.tflite", "int8", x_train[:200], samples=x_test,
        int8_io=False, ranges="calibrated",
    )
    assert (report.input_dtype, report.output_dtype) == ("float32", "float32")
    assert {u.used for u in report.activation_ranges} == {"calibrated"}
    assert report.top1_agreement >= 0.97
    assert all(c.ok for c in report.kernels.values())


def test_dynamic_range_mode(trained, digits, tmp_path):
    report = tflite_export.export_tflite(
        trained["model"], tmp_path / "d.tflite", "dynamic", samples=digits[2]
    )
    assert report.reference == "stripped Keras model" and report.top1_agreement >= 0.98
    assert all(c.ok and c.max_distinct_per_channel <= LEVELS for c in report.kernels.values())
    # conv2 (4,608 weights) is stored as int8, conv1 (144 weights) is under the 1,024 minimum
    assert report.kernels["conv2"].dtype == "int8" and report.kernels["conv1"].dtype == "float32"


# ---------------------------------------------------------------- every kernel layout


def mixed_model():
    inp = keras.Input((12, 12, 3))
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inp)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(name="dw_relu")(x)
    x = L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(x)
    x = L.Reshape((144, 8), name="seq")(x)
    x = L.Conv1D(6, 3, name="c1d")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inp, L.Dense(5, name="fc")(x), name="mixed")


def test_all_kernel_layouts_found_and_packed_exactly(tmp_path):
    quantized = uniq_tf.quantize_model(
        mixed_model(), weight_bits=3, per_channel=True,
        layer_bits={"fc": (5, None), "c1d": (1, None)},
    )
    x = np.random.default_rng(0).uniform(0, 1, (16, 12, 12, 3)).astype("float32")
    quantized.predict(x, verbose=0)
    report = tflite_export.export_tflite(quantized, tmp_path / "m.tflite", "float", samples=x)
    keys = {"dw", "sep_depthwise", "sep", "c1d", "fc"}  # SeparableConv2D: split in two
    assert set(report.kernels) == keys
    for key, check in report.kernels.items():
        assert check.ok, check
        assert check.max_distinct_per_channel <= check.limit
        assert check.max_rel_error < 1e-6, key
    assert report.kernels["c1d"].max_distinct_per_channel == 2  # b = 1
    assert report.max_abs_diff <= 1e-5
    # untrained: near-equal logits, so agreement says little here; the kernels do. The
    # uncalibrated (-6, 6) ranges put this model's outputs near the int8 bound (measured 8.3
    # output steps once against the default 8), so the bound is widened: this test is about
    # the kernels and ranges, the bound itself is tested in test_hardening.
    with pytest.warns(UserWarning, match=r"still TFMOT's initial \(-6.0, 6.0\)"):
        int8 = tflite_export.export_tflite(
            quantized, tmp_path / "i8.tflite", "int8", x, min_agreement=0.0, max_steps=12
        )
    assert set(int8.kernels) == keys
    assert all(c.ok and c.dtype == "int8" for c in int8.kernels.values()), int8.kernels
    assert {u.layer: u.used for u in int8.activation_ranges} == {
        "dw_relu": "learned", "sep": "learned"
    }

    packed = tflite_export.save_packed(quantized, tmp_path / "m.uniq")
    loaded = tflite_export.load_packed(tmp_path / "m.uniq")
    stripped = uniq_tf.strip_quantization(quantized)
    for a, b in zip(loaded.get_weights(), stripped.get_weights(), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    sizes = {k: (c.bits, c.indices.size) for k, c in uniq_tf.get_codebooks(quantized).items()}
    assert packed.index_bytes == sum(-(-n * b // 8) for b, n in sizes.values())


# ---------------------------------------------------------------- packed format


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), count=st.integers(0, 300), seed=st.integers(0, 2**31))
def test_pack_indices_round_trip(bits, count, seed):
    indices = np.random.default_rng(seed).integers(0, 2**bits, count)
    data = pack_indices(indices, bits)
    assert len(data) == -(-count * bits // 8)
    np.testing.assert_array_equal(unpack_indices(data, bits, count), indices)


def test_pack_indices_rejects_out_of_range():
    with pytest.raises(ValueError, match="0..7"):
        pack_indices(np.array([0, 8]), 3)


def test_packed_round_trip_is_bit_exact_and_b_over_32_small(trained, digits):
    path = trained["dir"] / "m.uniq"
    packed = tflite_export.save_packed(trained["model"], path)
    loaded = tflite_export.load_packed(path)
    stripped = trained["stripped"]
    assert [w.name for w in loaded.weights] == [w.name for w in stripped.weights]
    for a, b in zip(loaded.get_weights(), stripped.get_weights(), strict=True):
        assert a.tobytes() == b.tobytes()
    x_test = digits[2]
    np.testing.assert_array_equal(
        loaded.predict(x_test, verbose=0), stripped.predict(x_test, verbose=0)
    )
    limit = BITS / 32 * packed.kernel_float32_bytes
    assert limit <= packed.index_bytes <= 1.05 * limit
    codebooks = uniq_tf.get_codebooks(trained["model"]).values()
    assert packed.codebook_bytes == sum(4 * c.levels.size for c in codebooks)
    assert packed.index_ratio == pytest.approx(BITS / 32, rel=0.05)


def test_size_report(trained):
    out = trained["dir"]
    packed = tflite_export.save_packed(trained["model"], out / "s.uniq")
    report = tflite_export.size_report(
        trained["model"], packed, out / "f.tflite", out / "i8.tflite"
    )
    rows = {r.name: r for r in report.rows}
    print(report.summary())
    assert list(rows) == ["float32 weights", "TFLite float", "TFLite int8", "packed"]
    weights = trained["stripped"].get_weights()
    assert rows["float32 weights"].raw_bytes == 4 * sum(w.size for w in weights)
    assert rows["TFLite int8"].raw_bytes < rows["TFLite float"].raw_bytes / 2.5
    assert rows["packed"].raw_bytes == os.path.getsize(out / "s.uniq") == packed.file_bytes
    assert report.limit == BITS / 32 and "b/32" in report.summary()
    # The file ratio counts every byte on disk against b/32 of all float32 weights.
    assert packed.file_ratio == pytest.approx(
        packed.file_bytes / (BITS / 32 * rows["float32 weights"].raw_bytes))
    assert f"{packed.file_ratio:.3f}x b/32" in report.summary()


def test_load_packed_rejects_other_files(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.zip", "w") as archive:
        archive.writestr("manifest.json", '{"format": "other", "version": 1}')
    with pytest.raises(ValueError, match="not a uniq_tf.packed file"):
        tflite_export.load_packed(tmp_path / "x.zip")
    (tmp_path / "model.tflite").write_bytes(b"TFL3 not a zip")
    with pytest.raises(ValueError, match="not a zip archive"):
        tflite_export.load_packed(tmp_path / "model.tflite")


# ---------------------------------------------------------------- bad input


def test_int8_needs_representative_data(trained, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        tflite_export.export_tflite(trained["model"], tmp_path / "m.tflite", "int8")
    assert not os.listdir(tmp_path)


def test_bad_arguments(trained, tmp_path):
    model = trained["model"]
    with pytest.raises(ValueError, match="mode must be one of"):
        tflite_export.export_tflite(model, tmp_path / "m.tflite", "int4")
    with pytest.raises(ValueError, match="ranges must be one of"):
        tflite_export.export_tflite(model, tmp_path / "m.tflite", "int8", np.zeros((2, 8, 8, 1)),
                                    ranges="minmax")
    with pytest.raises(ValueError, match=r"does not fit model input \(None, 8, 8, 1\)"):
        tflite_export.export_tflite(model, tmp_path / "m.tflite", "int8", np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="no codebooks to pack"):
        tflite_export.save_packed(mixed_model(), tmp_path / "m.uniq")
    assert not os.listdir(tmp_path)


def test_never_quantized_model_warns_and_exports_float(tmp_path):
    model = mixed_model()
    with pytest.warns(UserWarning, match="never quantized"):
        report = tflite_export.export_tflite(model, tmp_path / "m.tflite")
    assert report.kernels == {} and report.max_abs_diff <= 1e-5
    assert os.path.getsize(tmp_path / "m.tflite") == report.size_bytes


def test_quantizers_left_off_are_reported(tmp_path):
    quantized = uniq_tf.quantize_model(mixed_model(), weight_bits=3)
    uniq_tf.set_weight_mode(quantized, uniq_tf.Mode.FLOAT, layers=["fc"])
    with pytest.warns(UserWarning, match=r"weights in FLOAT mode: \['fc'\]"):
        report = tflite_export.export_tflite(quantized, tmp_path / "m.tflite")
    assert report.kernels["fc"].ok  # exported as its codebook all the same


def unconvertible_model():
    inp = keras.Input((4, 4))
    x = L.Dense(4, name="fc")(inp)
    out = L.Lambda(lambda t: tf.linalg.det(t), name="determinant")(x)
    return keras.Model(inp, out, name="det")


def test_converter_error_names_the_layer_and_keeps_the_good_file(trained, tmp_path):
    good = tmp_path / "m.tflite"
    good.write_bytes((trained["dir"] / "f.tflite").read_bytes())
    before = good.read_bytes()
    quantized = uniq_tf.quantize_model(unconvertible_model())
    with pytest.raises(tflite_export.ConversionError, match="determinant") as error:
        tflite_export.export_tflite(quantized, good)
    assert "MatrixDeterminant" in str(error.value)
    assert good.read_bytes() == before and _no_temp_files(tmp_path)


def test_failed_verification_keeps_the_good_file(trained, digits, tmp_path, monkeypatch):
    good = tmp_path / "m.tflite"
    good.write_bytes(b"a good model")
    monkeypatch.setattr(
        export_module.runtime, "predict", lambda path, x: np.zeros((len(x), 10), "float32") + 1e3
    )
    with pytest.raises(tflite_export.VerificationError, match="max \\|diff\\|"):
        tflite_export.export_tflite(trained["model"], good, samples=digits[2][:20])
    assert good.read_bytes() == b"a good model" and _no_temp_files(tmp_path)


def test_unwritable_paths(trained, tmp_path):
    model = trained["model"]
    with pytest.raises(tflite_export.ExportPathError, match="does not exist"):
        tflite_export.export_tflite(model, tmp_path / "missing" / "m.tflite")
    with pytest.raises(tflite_export.ExportPathError, match="is a directory"):
        tflite_export.export_tflite(model, tmp_path)
    with pytest.raises(tflite_export.ExportPathError, match="does not exist"):
        tflite_export.save_packed(model, tmp_path / "missing" / "m.uniq")
    assert os.listdir(tmp_path) == []


def test_representative_data_forms(trained, digits):
    model, x = trained["model"], digits[0][:40]
    dataset = tf.data.Dataset.from_tensor_slices((x, digits[1][:40])).batch(16)

    def generator():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    for data in (x, dataset, generator, [x[:16], x[16:]]):
        np.testing.assert_array_equal(as_samples(data, model, limit=30), x[:30])
    with pytest.raises(TypeError, match="representative_data must be"):
        as_samples(3, model)


# ---------------------------------------------------------------- the example script


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_example_exports_a_saved_model(trained, digits, tmp_path):
    from tflite_export import cli as example

    trained["model"].save(tmp_path / "quantized_model.h5", save_format="h5")
    summary = example.run(str(tmp_path / "quantized_model.h5"), str(tmp_path / "out"),
                          verbose=False)
    files = ["model.uniq", "model_float.tflite", "model_int8.tflite", "size_report.txt",
             "summary.json"]
    assert sorted(os.listdir(tmp_path / "out")) == files
    accuracy = summary["test_accuracy"]
    keras_accuracy = np.mean(trained["model"].predict(digits[2], verbose=0).argmax(1) == digits[3])
    assert accuracy["keras_quantized"] == pytest.approx(keras_accuracy)
    assert accuracy["tflite_float"] == pytest.approx(accuracy["keras_stripped"])
    assert abs(accuracy["tflite_int8"] - accuracy["keras_quantized"]) <= 0.005
    # the file on disk, everything in it, against every weight at b bits
    assert summary["packed_file_bytes"] == os.path.getsize(tmp_path / "out" / "model.uniq")
    assert summary["packed_file_ratio"] == pytest.approx(
        summary["packed_file_bytes"]
        / (BITS / 32 * 4 * uniq_tf.strip_quantization(trained["model"]).count_params()))
    with pytest.raises(FileNotFoundError, match="run uniq-train first"):
        example.run(str(tmp_path / "missing.h5"), str(tmp_path / "out"))
