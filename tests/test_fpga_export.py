"""fpga_export: FINN-ready QONNX bundles checked with qonnx (FINN itself is checked by hand with
examples/finn_estimate.py in a separate finn-plus environment, never here).

Two models are trained W4A8 on the 8x8 digits once per module: the demo CNN
(uniq_tf.models.small_cnn: conv-BN-ReLU x3, max pool, global average pool, dense) and a small
residual network (conv-BN-ReLU stem, a conv-BN-ReLU-conv-BN block added to it, ReLU, max pool,
flatten, dense). Both are exported with the digits' exact 5-bit input quantizer. A third,
untrained model (calibrated only) covers per-channel codebooks, depthwise conv, ReLU6, Reshape
and Dense on a feature map.

Stated parity (digits test split, 450 images): top-1 agreement with the quantized Keras model
>= 99.5% (measured 100%). Against the Keras model with the grid-snapped weights, which computes
the same function, >= 95% of the images agree to 1e-4 (measured 98.7-98.9%) and the max abs
logit difference is <= 0.05 (measured 0.002-0.02 on logits up to about 9): float summation
order differs between TensorFlow and onnxruntime and now and then flips an activation's
rounding by one step.
"""

import json
import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.general.quant import quant as qonnx_quant
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model
from qonnx.util.inference_cost import inference_cost

import fpga_export
import uniq_tf
from fpga_export import actquant, bundle, check, folding, grid, onnx_graph
from uniq_tf import bops, kquantile, models
from uniq_tf._keras import keras, tf

L = keras.layers
DIGITS_INPUT = {"input_bits": 5, "input_scale": 1 / 16}
MAX_ABS_DIFF_SNAPPED = 0.05
MIN_EXACT_FRACTION = 0.95
MIN_AGREEMENT = 0.995
FINN_BUILD_FIELDS = {  # finn-plus 1.6.1 DataflowBuildConfig fields the bundle may set
    "output_dir", "synth_clk_period_ns", "board", "fpga_part", "shell_flow_type",
    "folding_config_file", "specialize_layers_config_file", "generate_outputs", "steps",
    "target_fps", "max_multithreshold_bit_width",
}


def assert_same_function(reference: np.ndarray, exported: np.ndarray) -> None:
    """Equal to 1e-4 but where float summation order flipped an activation's rounding by one
    step (rare: allowed on up to 5% of the outputs)."""
    diff = np.abs(reference - exported)
    assert np.mean(diff <= 1e-4) >= 0.95, np.sort(diff.ravel())[-10:]
    assert diff.max() <= 0.2, diff.max()


def residual_net():
    inp = keras.Input((8, 8, 1), name="image")
    h = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    h = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(h))
    r = L.Conv2D(16, 3, padding="same", use_bias=False, name="block_conv1")(h)
    r = L.ReLU(name="block_relu")(L.BatchNormalization(name="block_bn1")(r))
    r = L.Conv2D(16, 3, padding="same", name="block_conv2")(r)
    r = L.BatchNormalization(name="block_bn2")(r)
    h = L.ReLU(name="add_relu")(L.Add(name="add")([h, r]))
    h = L.Flatten(name="flatten")(L.MaxPooling2D(name="pool")(h))
    return keras.Model(inp, L.Dense(10, name="fc")(h), name="residual")


def structure_net():
    """Untrained: depthwise, ReLU6, Dense on a map, Reshape to a map, batch norm on a vector,
    softmax."""
    inp = keras.Input((8, 8, 1), name="image")
    h = L.Conv2D(8, 3, strides=2, padding="same", name="c0")(inp)
    h = L.ReLU(6.0, name="r0")(L.BatchNormalization(name="bn0")(h))
    h = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    h = L.Activation("relu6", name="r1")(L.BatchNormalization(name="bn1")(h))
    h = L.Dense(12, activation="relu", name="dense_map")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Reshape((2, 2, 3), name="reshape")(h)
    h = L.Conv2D(4, 1, activation="relu", name="pw")(h)
    h = L.Flatten(name="flatten")(h)
    h = L.ReLU(name="r2")(L.BatchNormalization(name="bn2")(L.Dense(16, name="fc1")(h)))
    return keras.Model(inp, L.Dense(10, activation="softmax", name="fc")(h), name="structure")


def _train(model, digits, epochs):
    x_train, y_train, _, _ = digits
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    quantized = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8)
    uniq_tf.calibrate_activations(quantized, [x_train[:512]], verbose=False)
    quantized.compile(keras.optimizers.Adam(5e-4), loss)
    quantized.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return quantized


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """name -> (quantized model, bundle dir, export result) for the demo CNN and the ResNet."""
    out = {}
    for name, build, epochs in (("cnn", models.small_cnn, 5), ("residual", residual_net, 8)):
        keras.backend.clear_session()
        tf.random.set_seed(0)
        model = _train(build(), digits, epochs)
        directory = tmp_path_factory.mktemp(name) / "bundle"
        out[name] = (model, directory,
                     fpga_export.export_finn(model, directory, target_fps=2000, **DIGITS_INPUT))
    return out


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    keras.backend.clear_session()
    tf.random.set_seed(0)
    model = uniq_tf.quantize_model(structure_net(), 4, 8, per_channel=True)
    x = np.random.default_rng(0).integers(0, 17, (64, 8, 8, 1)).astype("float32") / 16
    uniq_tf.calibrate_activations(model, [x], verbose=False)
    directory = tmp_path_factory.mktemp("structure") / "bundle"
    with pytest.warns(UserWarning, match="FINN does not map a Reshape to a feature map"):
        result = fpga_export.export_finn(model, directory, **DIGITS_INPUT)
    return model, directory, result, x


MODELS = ("cnn", "residual")


@pytest.mark.parametrize("name", MODELS)
def test_exported_graph_reproduces_keras_on_digits(trained, digits, name):
    model, directory, _ = trained[name]
    x_test = digits[2]
    exported = check.predict(directory, x_test)
    # The 5-bit input quantizer with scale 1/16 holds the digits exactly.
    np.testing.assert_array_equal(check.quantize_input(directory, x_test), x_test)
    real = check.compare(model.predict(x_test, verbose=0), exported)
    snapped_out = check.grid_snapped_model(model, directory).predict(x_test, verbose=0)
    snapped = check.compare(snapped_out, exported)
    assert real["top1_agreement"] >= MIN_AGREEMENT, real
    assert snapped["top1_agreement"] >= MIN_AGREEMENT, snapped
    assert snapped["max_abs_diff"] <= MAX_ABS_DIFF_SNAPPED, snapped
    exact = np.mean(np.abs(snapped_out - exported).max(axis=1) <= 1e-4)
    assert exact >= MIN_EXACT_FRACTION, exact


def test_structure_model_reproduces_keras(structure):
    model, directory, result, x = structure
    exported = check.predict(directory, x)
    assert_same_function(check.grid_snapped_model(model, directory).predict(x, verbose=0),
                         exported)
    assert np.allclose(exported.sum(-1), 1.0, atol=1e-5)  # the softmax made it into the graph
    notes = result.descriptor["finn_notes"]
    assert len(notes) == 1 and "'reshape'" in notes[0], notes
    assert not result.descriptor["finn_compatible"]


def test_nested_models_are_walked(tmp_path):
    block_in = keras.Input((8, 8, 4))
    b = L.Conv2D(4, 3, padding="same", name="b_conv")(block_in)
    b = L.ReLU(name="b_relu")(L.BatchNormalization(name="b_bn")(b))
    block = keras.Model(block_in, L.Add(name="b_add")([block_in, b]), name="block")
    seq = keras.Sequential([L.Conv2D(6, 1, name="s_conv"), L.ReLU(name="s_relu")], name="seq")
    inp = keras.Input((8, 8, 1))
    h = L.ReLU(name="stem_relu")(L.Conv2D(4, 3, padding="same", name="stem")(inp))
    model = keras.Model(inp, L.Dense(3, name="fc")(L.Flatten()(seq(block(h)))))
    quantized = uniq_tf.quantize_model(model, 3, 8)
    x = np.random.default_rng(0).integers(0, 17, (16, 8, 8, 1)).astype("float32") / 16
    uniq_tf.calibrate_activations(quantized, [x], verbose=False)
    result = fpga_export.export_finn(quantized, tmp_path / "b", **DIGITS_INPUT)
    assert [row["name"] for row in result.descriptor["layers"]] == ["stem", "b_conv", "s_conv",
                                                                      "fc"]
    assert_same_function(check.grid_snapped_model(quantized, tmp_path / "b").predict(x, verbose=0),
                         check.predict(tmp_path / "b", x))


@pytest.mark.parametrize("name", MODELS)
def test_weights_are_integers_of_the_grid_width(trained, name):
    _, directory, result = trained[name]
    wrapper = cleanup_model(ModelWrapper(str(directory / "model.onnx")))
    wrapper = wrapper.transform(InferDataTypes())
    nodes = [n for n in wrapper.graph.node if n.op_type in ("Conv", "MatMul")]
    layers = result.descriptor["layers"]
    assert len(nodes) == len(layers)
    for node, layer in zip(nodes, layers, strict=True):
        assert layer["quantized"]
        bits = layer["weight_grid_bits"]
        assert bits >= max(layer["weight_index_bits"], 2)
        assert wrapper.get_tensor_datatype(node.input[1]) == DataType[f"INT{bits}"], layer["name"]
        quant = wrapper.find_producer(node.input[1])
        ints = wrapper.get_initializer(quant.input[0])
        assert np.array_equal(ints, np.round(ints))
        assert np.abs(ints).max() <= 2 ** (bits - 1) - 1
        assert len(np.unique(ints)) <= 2 ** layer["weight_index_bits"]


@pytest.mark.parametrize("name", MODELS)
def test_codebooks_npz_reproduces_stripped_kernels(trained, name):
    model, directory, _ = trained[name]
    arrays = np.load(directory / "codebooks.npz")
    stripped = uniq_tf.strip_quantization(model)
    codebooks = uniq_tf.get_codebooks(model)
    assert codebooks
    for key in codebooks:
        levels, indices = arrays[f"{key}/levels"], arrays[f"{key}/indices"]
        assert indices.max() < 2**4
        np.testing.assert_array_equal(levels[indices], stripped.get_layer(key).kernel.numpy())


def test_per_channel_codebooks_in_npz_and_metadata(structure):
    model, directory, _, _ = structure
    arrays = np.load(directory / "codebooks.npz")
    stripped = uniq_tf.strip_quantization(model)
    metadata = {p.key: p.value for p in ModelWrapper(str(directory / "model.onnx")).model
                .metadata_props}
    for key, codebook in uniq_tf.get_codebooks(model).items():
        rebuilt = uniq_tf.Codebook(
            key, codebook.weight, codebook.bits, arrays[f"{key}/levels"],
            arrays[f"{key}/indices"], tuple(arrays[f"{key}/channel_axes"]), codebook.distribution)
        kernel = getattr(stripped.get_layer(key), codebook.weight).numpy()
        np.testing.assert_array_equal(rebuilt.dequantize(), kernel)
        record = json.loads(metadata[f"uniq_tf.codebook.{key}"])
        np.testing.assert_array_equal(np.array(record["levels"], np.float32), codebook.levels)
        scale = np.atleast_1d(record["grid_scale"])[:, None]
        snapped = np.array(record["grid_levels"]) * scale
        gaps = np.diff(codebook.levels, axis=-1).min(axis=-1)
        assert np.all(np.abs(snapped - codebook.levels).max(-1) <= grid.GRID_TOLERANCE * gaps)


@pytest.mark.parametrize("name", MODELS)
def test_inference_cost_counts_the_same_macs_and_bops_where_it_sees_the_same_widths(trained,
                                                                                    name):
    _, directory, result = trained[name]
    cost = inference_cost(str(directory / "model.onnx"), discount_sparsity=False)["total_cost"]
    layers = result.descriptor["layers"]
    ours = sum(bops.simple_bops(row["macs"], row["weight_grid_bits"], row["input_bits"])
               for row in layers)
    assert ours == result.descriptor["totals"]["bops_simple_grid_bits"]
    assert result.descriptor["totals"]["qonnx_inference_cost"]["total_bops"] == cost["total_bops"]
    assert cost["total_macs"] == result.descriptor["totals"]["macs"]
    # qonnx takes a tensor after average pooling as float: the demo CNN's classifier (after
    # global average pooling) is the one layer it counts at 32 input bits.
    after_pooling = {"cnn": ["fc"], "residual": []}[name]
    rows = {row["name"]: row for row in layers}
    assert cost["total_bops"] == ours + sum(
        rows[n]["macs"] * rows[n]["weight_grid_bits"] * (32 - rows[n]["input_bits"])
        for n in after_pooling)
    # The paper's formula at the index width b is the smaller figure the descriptor states too.
    assert result.descriptor["totals"]["bops_paper_index_bits"] < ours


@pytest.mark.parametrize("name", MODELS)
def test_the_descriptor_and_uniq_tf_summary_count_the_same_bops(trained, name):
    """One rule for which layers carry a bit width: the bundle's paper BOPs at the index width
    are uniq_tf.summary's, layer by layer, with the bundle's input bits."""
    model, _, result = trained[name]
    summary = uniq_tf.summary(model, input_bits=result.descriptor["input"]["quant"]["bits"])
    rows = {row["name"]: row for row in summary.layers if row["macs"]}
    layers = {row["name"]: row for row in result.descriptor["layers"]}
    assert set(layers) == set(rows)
    for name_, row in layers.items():
        assert row["bops_paper_index_bits"] == pytest.approx(rows[name_]["bops"], rel=1e-12)
        assert row["input_bits"] == rows[name_]["activation_bits"]
        assert row["macs"] == rows[name_]["macs"]
    assert result.descriptor["totals"]["bops_paper_index_bits"] == pytest.approx(
        summary.total_bops, rel=1e-12)


def test_descriptor_records_layers_and_bits(trained):
    _, directory, result = trained["cnn"]
    on_disk = json.loads((directory / "descriptor.json").read_text())
    assert on_disk["totals"] == json.loads(json.dumps(result.descriptor["totals"]))
    rows = {row["name"]: row for row in on_disk["layers"]}
    assert list(rows) == ["conv1", "conv2", "conv3", "fc"]
    assert rows["conv1"]["input_bits"] == 5  # the model input
    assert rows["conv2"]["input_bits"] == 8  # relu1's quantizer
    assert rows["fc"]["input_bits"] == 8  # conv3's ReLU quantizer, through the pooling
    conv2 = rows["conv2"]
    assert conv2["macs"] == 64 * 32 * 9 * 64
    assert conv2["bops_paper_index_bits"] == bops.conv_bops(64, 32, 3, 3, 4, 8, 64)
    memory = conv2["weight_memory"]
    assert memory["indices_bits"] == 64 * 32 * 9 * 4
    assert memory["grid_integers_bits"] == 64 * 32 * 9 * conv2["weight_grid_bits"]
    assert on_disk["tool_versions"]["uniq_tf"] == uniq_tf.__version__
    assert set(on_disk["activations"]) == {"relu1", "relu2", "relu3"}
    assert all(a["zero_point"] == 0 for a in on_disk["activations"].values())


@pytest.mark.parametrize("name", MODELS)
def test_folding_divides_layer_sizes_and_meets_target(trained, name):
    _, directory, result = trained[name]
    config = json.loads((directory / "folding_config.json").read_text())
    layers = [row for row in result.descriptor["layers"] if row["finn"]]
    assert set(config) == {"Defaults"} | {row["finn"]["node"] for row in layers}
    assert [row["finn"]["node"] for row in layers] == [f"MVAU_hls_{i}" for i in
                                                        range(len(layers))]
    budget = 1e9 / 10.0 / 2000  # 100 MHz at 2000 frames/s
    for row in layers:
        f = row["finn"]
        assert f["MH"] == row["out_channels"]
        assert f["MW"] == row["in_channels"] * row["kernel_size"][0] * row["kernel_size"][1]
        assert f["MH"] % f["PE"] == 0 and f["MW"] % f["SIMD"] == 0
        assert config[f["node"]]["PE"] == f["PE"] and config[f["node"]]["SIMD"] == f["SIMD"]
        assert f["SIMD"] * row["weight_grid_bits"] <= folding.MVAU_WWIDTH_MAX or f["SIMD"] == 1
        assert f["cycles_per_frame"] <= budget


def test_folding_choice_is_the_cheapest_that_fits():
    assert folding.choose(64, 288, 64, None) == (1, 1)
    pe, simd = folding.choose(64, 288, 64, max_cycles=64 * 288 * 64 / 12)
    assert pe * simd == 12 and 64 % pe == 0 and 288 % simd == 0 and simd == 12
    assert folding.choose(64, 288, 64, max_cycles=64 * 288 * 64 / 12, max_simd=3) == (4, 3)
    assert folding.choose(8, 9, 4, max_cycles=1) == (8, 9)  # unreachable: fastest allowed


def test_depthwise_layer_folds_as_vvau(structure):
    result = structure[2]
    nodes = {row["name"]: row["finn"]["node"] for row in result.descriptor["layers"]}
    assert nodes == {"c0": "MVAU_hls_0", "dw": "VVAU_hls_0", "dense_map": "MVAU_hls_1",
                     "pw": "MVAU_hls_2", "fc1": "MVAU_hls_3", "fc": "MVAU_hls_4"}
    config = json.loads((structure[1] / "folding_config.json").read_text())
    assert config["VVAU_hls_0"] == {"PE": 1, "SIMD": 1, "ram_style": "auto"}


def test_build_config_uses_finn_field_names(trained):
    _, directory, _ = trained["cnn"]
    config = json.loads((directory / "dataflow_build_config.json").read_text())
    assert set(config) <= FINN_BUILD_FIELDS and "max_multithreshold_bit_width" not in config
    assert config["generate_outputs"] == ["estimate_reports"]
    assert config["board"] == "Pynq-Z1" and config["fpga_part"] == "xc7z020clg400-1"
    assert config["target_fps"] == 2000 and config["synth_clk_period_ns"] == 10.0
    for key in ("folding_config_file", "specialize_layers_config_file"):
        json.loads((directory / config[key]).read_text())
    assert "step_uniq_streamline" in config["steps"] and "step_streamline" not in config["steps"]
    steps = (directory / f"{bundle.STEPS_MODULE}.py").read_text()
    assert 'STEP_NAME = "step_uniq_streamline"' in steps
    readme = (directory / "README.md").read_text()
    assert "import finn_steps" in readme and "MVAU_hls_0" in readme


def test_model_onnx_is_annotated(trained):
    _, directory, result = trained["residual"]
    wrapper = ModelWrapper(str(directory / "model.onnx"))
    assert wrapper.check_all_tensor_shapes_specified()
    assert wrapper.get_tensor_shape("input") == [1, 1, 8, 8]
    quants = wrapper.get_nodes_by_op_type("Quant")
    assert all(n.domain == "qonnx.custom_op.general" for n in quants)
    for conv in wrapper.get_nodes_by_op_type("Conv"):
        attrs = {a.name for a in conv.attribute}
        assert {"group", "dilations", "pads", "strides", "kernel_shape"} <= attrs
    assert len(wrapper.get_nodes_by_op_type("Add")) >= 1  # the residual add, as a standard op
    assert {"BatchNormalization", "Relu", "MaxPool", "Flatten"} <= {
        n.op_type for n in wrapper.graph.node}
    weight_quant = wrapper.find_producer(wrapper.get_nodes_by_op_type("Conv")[0].input[1])
    assert wrapper.get_tensor_datatype(weight_quant.input[0]) == DataType[
        f"INT{result.descriptor['layers'][0]['weight_grid_bits']}"]


# ------------------------------------------------------------------------- grid and quantizers


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.floats(-1.0, 1.0), st.floats(0.01, 1.0), st.floats(0.0, 0.3),
       st.integers(0, 2**31))
def test_grid_is_the_smallest_width_within_tolerance(bits, offset, sigma, jitter, seed):
    """Gaussian k-quantile codebooks (mean within one sigma of 0), moved apart at random by up
    to 30% of each gap."""
    levels = sigma * (offset + kquantile.standard_levels(bits))
    gaps = np.diff(levels)
    levels[1:] += np.cumsum(gaps * jitter * np.random.default_rng(seed).uniform(-1, 1, gaps.size))
    result = grid.snap_codebook(levels, bits)
    gap = np.diff(levels).min()
    snapped = result.values()[0]
    assert result.bits >= max(bits, 2)
    assert np.abs(result.levels).max() <= result.max_int
    assert np.abs(snapped - levels).max() <= grid.GRID_TOLERANCE * gap * (1 + 1e-6) + 1e-7
    if result.bits > max(bits, 2):
        narrower = grid.snap_rows(levels[None], result.bits - 1)
        assert narrower.relative_error.max() > grid.GRID_TOLERANCE


def test_grid_widths_of_gaussian_codebooks():
    """B for the zero-mean Gaussian codebooks at b = 1..8 (1% of the smallest level gap)."""
    widths = [grid.snap_codebook(kquantile.standard_levels(b), b).bits for b in range(1, 9)]
    assert widths == sorted(widths) and widths[3] == 10 and widths[-1] <= grid.MAX_GRID_BITS


def test_grid_reports_codebooks_it_cannot_hold():
    with pytest.raises(ValueError, match="pass weight_grid_bits"):
        grid.snap_codebook(np.array([-1.0, 0.0, 1e-7, 1.0]), 2)
    fixed = grid.snap_codebook(np.array([-1.0, 0.0, 1e-7, 1.0]), 2, bits=4)
    assert fixed.bits == 4 and fixed.relative_error.max() > grid.GRID_TOLERANCE


@settings(max_examples=40, deadline=None)
@given(st.floats(-8.0, 0.0), st.floats(0.05, 8.0), st.sampled_from([2, 4, 8]),
       st.integers(0, 2**31))
def test_quant_params_equal_tensorflow_fake_quant(low, high, bits, seed):
    params = actquant.from_fake_quant(low, high, bits)
    x = np.random.default_rng(seed).uniform(low - 1, high + 1, 2000).astype(np.float32)
    expected = tf.quantization.fake_quant_with_min_max_vars(
        x, low, high, num_bits=bits, narrow_range=False).numpy()
    got = qonnx_quant(x, np.float32(params.scale), np.float32(params.zero_point),
                      np.float32(bits), 0, 0, "ROUND")
    # Equal but for ties, which TF rounds up and QONNX to even: at most one step apart.
    step = np.float32(params.scale)
    assert np.all(np.abs(got - expected) <= step * 1.0001)
    assert np.mean(np.abs(got - expected) < 1e-5 + 1e-6 * np.abs(expected)) >= 0.99


# ------------------------------------------------------------------------- errors and safety


def test_float_model_is_refused(tmp_path):
    model = structure_net()
    with pytest.raises(ValueError, match="no UNIQ-quantized layer"):
        fpga_export.export_finn(model, tmp_path / "b", input_range=(0, 1))
    assert not (tmp_path / "b").exists()


def test_dynamic_input_needs_input_shape(tmp_path):
    inp = keras.Input((None, None, 1))
    h = L.ReLU()(L.Conv2D(4, 3, padding="same")(inp))
    h = L.AveragePooling2D(padding="same", name="avg")(h)  # odd sizes: padded, not counted
    model = keras.Model(inp, L.Conv2D(2, 1)(h))
    quantized = uniq_tf.quantize_model(model, 4, 8)
    with pytest.raises(ValueError, match="dynamic input shape"):
        fpga_export.export_finn(quantized, tmp_path / "a", input_range=(0, 1))
    with pytest.raises(ValueError, match="contradicts"):
        fpga_export.export_finn(quantized, tmp_path / "a", input_shape=(8, 8, 3),
            input_range=(0, 1))
    with pytest.warns(UserWarning, match="FINN will not map") as caught:
        result = fpga_export.export_finn(quantized, tmp_path / "a", input_shape=(7, 9, 1),
            input_range=(0, 1))
    message = str(caught[0].message)
    # Uncalibrated, a ReLU's range starts at [0, 6] (not TFMOT's [-6, 6]): zero point 0.
    assert "nonzero zero point" not in message
    assert "'avg'" in message and "QuantAvgPool2d" in message
    assert result.descriptor["input"]["shape"] == [1, 1, 7, 9]
    assert not result.descriptor["finn_compatible"]
    x = np.random.default_rng(1).uniform(0, 1, (8, 7, 9, 1)).astype(np.float32)
    x = check.quantize_input(tmp_path / "a", x)
    snapped = check.grid_snapped_model(quantized, tmp_path / "a").predict(x, verbose=0)
    out = check.predict(tmp_path / "a", x)
    assert out.shape == (8, 2, 4, 5)  # NCHW output of a feature map
    assert_same_function(snapped, out.transpose(0, 2, 3, 1))


def test_unsupported_layers_are_listed_at_once(tmp_path):
    inp = keras.Input((8, 8, 1))
    h = L.Conv2DTranspose(4, 3, name="up")(inp)
    h = L.LeakyReLU(name="leaky")(h)
    h = L.Conv2D(4, 3, activation="tanh", name="tanh_conv")(h)
    h = L.Flatten()(h)
    with pytest.warns(UserWarning, match=r"in float .*up \(Conv2DTranspose\)"):
        model = uniq_tf.quantize_model(keras.Model(inp, L.Dense(3)(h)), 4, 8)
    with pytest.raises(ValueError) as error:
        fpga_export.export_finn(model, tmp_path / "b", input_range=(0, 1))
    for name in ("up (Conv2DTranspose)", "leaky (LeakyReLU)", "tanh_conv (Conv2D with"):
        assert name in str(error.value)
    assert "3 layers" in str(error.value)


def test_wide_activations_warn(tmp_path):
    inp = keras.Input((4, 4, 1))
    h = L.ReLU(name="relu")(L.Conv2D(2, 3, name="conv")(inp))
    model = uniq_tf.quantize_model(keras.Model(inp, L.Flatten()(h)), 4, 12)
    uniq_tf.calibrate_activations(model, [np.ones((2, 4, 4, 1), np.float32)], verbose=False)
    with pytest.warns(UserWarning, match="wider than 8 bits"):
        fpga_export.export_finn(model, tmp_path / "b", input_range=(0, 1))
    config = json.loads((tmp_path / "b" / "dataflow_build_config.json").read_text())
    assert config["max_multithreshold_bit_width"] == 12
    assert set(config) <= FINN_BUILD_FIELDS


def test_bad_arguments_are_rejected(trained, tmp_path):
    model = trained["cnn"][0]
    for kwargs, match in (
        ({"weight_grid_bits": 3}, "narrower than layer"),
        ({"weight_grid_bits": 17}, "weight_grid_bits"),
        ({"target_fps": 0}, "target_fps"),
        ({"board": "Arty"}, "board must be one of"),
        ({"input_shape": (8, 8)}, "input_shape"),
    ):
        with pytest.raises(ValueError, match=match):
            fpga_export.export_finn(model, tmp_path / "b", **kwargs, input_range=(0, 1))
    assert os.listdir(tmp_path) == []


def test_existing_directory_is_refused_unless_overwrite(trained, tmp_path):
    model = trained["cnn"][0]
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fpga_export.export_finn(model, target, input_range=(0, 1))
    assert (target / "notes.txt").read_text() == "mine"
    with pytest.warns(UserWarning, match="8-bit grid represents its codebook within"):
        fpga_export.export_finn(model, target, overwrite=True, weight_grid_bits=8,
            input_range=(0, 1))
    assert not (target / "notes.txt").exists()
    descriptor = json.loads((target / "descriptor.json").read_text())
    assert {row["weight_grid_bits"] for row in descriptor["layers"]} == {8}
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_failed_export_leaves_old_bundle_and_no_partial_files(trained, tmp_path, monkeypatch):
    model = trained["cnn"][0]
    target = tmp_path / "bundle"
    fpga_export.export_finn(model, target, input_range=(0, 1))
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle, "readme", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        fpga_export.export_finn(model, target, overwrite=True, weight_grid_bits=12,
            input_range=(0, 1))
    with pytest.raises(RuntimeError, match="disk full"):
        fpga_export.export_finn(model, tmp_path / "fresh", input_range=(0, 1))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_zero_padding_is_folded_into_the_conv(tmp_path):
    """FINN 1.6.1 crashed on the standalone Pad of a ZeroPadding2D (seen with models.resnet20):
    one that feeds convolutions only becomes their pads; any other stays, named in
    finn_notes."""
    inp = keras.Input((8, 8, 1))
    h = L.ZeroPadding2D(1, name="pad")(L.ReLU(name="relu")(L.Conv2D(4, 3, name="conv")(inp)))
    model = uniq_tf.quantize_model(keras.Model(inp, L.Conv2D(2, 3, strides=2, name="c2")(h)), 4,
                                   8)
    result = fpga_export.export_finn(model, tmp_path / "b", cost_check=False, input_range=(0, 1))
    graph = ModelWrapper(str(tmp_path / "b" / "model.onnx")).graph
    assert "Pad" not in {n.op_type for n in graph.node}
    (conv,) = [n for n in graph.node if n.op_type == "Conv" and n.name.startswith("c2")]
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 1, 1]
    assert not result.descriptor["finn_notes"]
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)).astype(np.float32) / 255
    assert_same_function(check.grid_snapped_model(model, tmp_path / "b").predict(x, verbose=0),
                         check.predict(tmp_path / "b", x).transpose(0, 2, 3, 1))

    pooled = L.MaxPooling2D(2, name="pool")(h)
    model = uniq_tf.quantize_model(keras.Model(inp, [pooled]), 4, 8)
    with pytest.warns(UserWarning, match="'pad': FINN 1.6.1's InferFMPadding"):
        result = fpga_export.export_finn(model, tmp_path / "p", cost_check=False,
            input_range=(0, 1))
    assert not result.descriptor["finn_compatible"]


@pytest.fixture
def global_rng_kept():
    """Python's and NumPy's global random states as they were before the test: tf_keras draws
    the seeds of unseeded initializers from Python's ``random``, so building a 20-layer model
    would change what the next module's models train to (tests/test_fpga_grid.py's parity
    margins are measured on those)."""
    state = random.getstate(), np.random.get_state()
    yield
    random.setstate(state[0])
    np.random.set_state(state[1])


def test_resnet20_option_a_shortcut_is_a_fixed_conv(digits, tmp_path, global_rng_kept):
    """models.resnet20's option-A shortcut (a 1x1 stride-2 AveragePooling2D, a Rescaling by 0
    for the new channels, a Concatenate) exports as one 1x1 stride-2 conv with constant 2-bit
    weights [I; 0]: FINN maps that to an MVAU, not the AveragePool nor the Concat with zeros.
    It is a fixed, non-UNIQ layer (no codebook) and computes the subsampled input and zeros
    exactly; the whole graph computes what the Keras model computes (untrained, calibrated:
    19 layers of 8-bit activations, so summation order flips a rounding more often than in
    the 4-layer models above: measured 94 % of the test images exact to 1e-4, max 0.004)."""
    keras.backend.clear_session()
    tf.random.set_seed(0)
    x_train, _, x_test, _ = digits
    model = uniq_tf.quantize_model(models.resnet20((8, 8, 1), 10), 4, 8)
    uniq_tf.calibrate_activations(model, [x_train[:256]], verbose=False)
    uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
    directory = tmp_path / "bundle"
    result = fpga_export.export_finn(model, directory, target_fps=1000, **DIGITS_INPUT)
    desc = result.descriptor
    assert desc["finn_compatible"], desc["finn_notes"]

    wrapper = ModelWrapper(str(directory / "model.onnx"))
    ops = [n.op_type for n in wrapper.graph.node]
    assert "AveragePool" not in ops and "Concat" not in ops
    for node in wrapper.graph.node:
        if node.op_type == "Mul":
            factor = wrapper.get_initializer(node.input[1])
            assert factor is None or np.all(factor != 0), node.name

    rows = [row for row in desc["layers"] if row["fixed_weights"]]
    assert [row["name"] for row in rows] == ["layer2.0.zero_pad", "layer3.0.zero_pad"]
    assert len(desc["layers"]) == 22  # 19 convs, fc and the two shortcuts
    arrays = np.load(directory / "codebooks.npz")
    props = {p.key for p in wrapper.model.metadata_props}
    for row, (c_in, c_out, pixels) in zip(rows, [(16, 32, 16), (32, 64, 4)], strict=True):
        assert row["keras_type"] == onnx_graph.SHORTCUT_TYPE
        assert not row["quantized"] and row["codebook"] is None
        assert row["weight_index_bits"] == row["weight_grid_bits"] == 2
        assert row["input_bits"] == 8  # the block input's ReLU quantizer
        assert (row["in_channels"], row["out_channels"], row["output_pixels"]) == (
            c_in, c_out, pixels)
        assert row["macs"] == c_in * c_out * pixels
        assert (row["finn"]["MW"], row["finn"]["MH"]) == (c_in, c_out)
        assert not any(k.startswith(row["name"] + "/") for k in arrays.files)
        assert f"{bundle.METADATA_PREFIX}.codebook.{row['name']}" not in props
        (conv,) = [n for n in wrapper.graph.node if n.name == row["onnx_node"]]
        attrs = {a.name: list(a.ints) for a in conv.attribute}
        assert attrs["kernel_shape"] == [1, 1] and attrs["strides"] == [2, 2]
        quant = wrapper.find_producer(conv.input[1])
        assert quant.op_type == "Quant"
        assert float(wrapper.get_initializer(quant.input[3])) == 2
        assert wrapper.get_tensor_datatype(quant.input[0]) == DataType["INT2"]
        expected = np.zeros((c_out, c_in, 1, 1), np.float32)
        expected[:c_in, :, 0, 0] = np.eye(c_in)
        np.testing.assert_array_equal(wrapper.get_initializer(quant.input[0]), expected)

    # The qonnx cross-check counts the shortcuts' MACs as the descriptor does; its BOPs take
    # the classifier's input after global average pooling as float, the descriptor as the
    # last ReLU quantizer's 8 bits (the rule uniq_tf.summary uses).
    cost = desc["totals"]["qonnx_inference_cost"]
    assert cost["total_macs"] == desc["totals"]["macs"]
    fc = next(row for row in desc["layers"] if row["name"] == "fc")
    assert fc["input_bits"] == 8
    assert cost["total_bops"] - desc["totals"]["bops_simple_grid_bits"] == (
        fc["macs"] * fc["weight_grid_bits"] * (32 - 8))
    summary = uniq_tf.summary(model, input_bits=desc["input"]["quant"]["bits"])
    counted = sum(row["bops_paper_index_bits"] for row in desc["layers"]
                  if not row["fixed_weights"])
    assert counted == pytest.approx(summary.total_bops, rel=1e-12)

    # The shortcut convs compute the subsampled input and zeros exactly.
    x = x_test[:8]
    batch = wrapper.transform(ChangeBatchSize(len(x))).transform(InferShapes())
    context = execute_onnx(batch, {onnx_graph.INPUT_NAME: x.transpose(0, 3, 1, 2)},
                           return_full_exec_context=True)
    for row in rows:
        (conv,) = [n for n in batch.graph.node if n.name == row["onnx_node"]]
        block_in, out = context[conv.input[0]], context[conv.output[0]]
        c_in = block_in.shape[1]
        np.testing.assert_array_equal(out[:, :c_in], block_in[:, :, ::2, ::2])
        assert not out[:, c_in:].any()

    exported = check.predict(directory, x_test)
    snapped_out = check.grid_snapped_model(model, directory).predict(x_test, verbose=0)
    snapped = check.compare(snapped_out, exported)
    assert snapped["top1_agreement"] >= MIN_AGREEMENT, snapped
    assert snapped["max_abs_diff"] <= MAX_ABS_DIFF_SNAPPED, snapped
    assert np.mean(np.abs(snapped_out - exported).max(axis=1) <= 1e-4) >= 0.9


def test_unpadded_conv_on_a_shared_input_is_numbered_first(tmp_path, global_rng_kept):
    """FINN numbers its MVAUs in its topologically sorted graph, where a conv without padding
    (a projection shortcut's 1x1) comes before a padded conv on the same input (FINN puts an
    FMPadding before that one): seen in finn-plus 1.6.1 builds of a projection-shortcut block
    and of models.resnet20. The descriptor's (and folding config's) numbering follows it."""
    inp = keras.Input((8, 8, 1))
    h = L.ReLU(name="relu")(L.Conv2D(8, 3, padding="same", name="stem")(inp))
    main = L.Conv2D(16, 3, padding="same", name="main")(h)
    side = L.Conv2D(16, 1, name="side")(h)
    model = uniq_tf.quantize_model(keras.Model(inp, L.Add(name="add")([main, side])), 4, 8)
    result = fpga_export.export_finn(model, tmp_path / "b", target_fps=1000, cost_check=False,
        input_range=(0, 1))
    nodes = {row["name"]: row["finn"]["node"] for row in result.descriptor["layers"]}
    assert nodes == {"stem": "MVAU_hls_0", "side": "MVAU_hls_1", "main": "MVAU_hls_2"}
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)).astype(np.float32) / 255
    assert_same_function(check.grid_snapped_model(model, tmp_path / "b").predict(x, verbose=0),
                         check.predict(tmp_path / "b", x).transpose(0, 2, 3, 1))
