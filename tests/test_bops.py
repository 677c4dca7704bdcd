"""BOPs: hand-computed layers, bit-width resolution, invariants, qonnx agreement, bad input."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import uniq_tf
from uniq_tf import bops, models
from uniq_tf._keras import keras

L = keras.layers
ROOT = Path(__file__).resolve().parents[1]


def single(layer, input_shape, name="single"):
    inp = keras.Input(input_shape)
    return keras.Model(inp, layer(inp), name=name)


def kernel_rows(report):
    return {row["name"]: row for row in report.layers if row["macs"]}


# --------------------------------------------------------------------------- hand-computed


def test_strided_conv():
    # 9x9x3 -> Conv2D(4, 3x3, stride 2, valid): (9 - 3) // 2 + 1 = 4, so 4x4 positions.
    # fan-in f = 3 * 3 * 3 = 27, outputs = 4 channels * 16 positions = 64, MACs = 64 * 27.
    report = bops.summary(single(L.Conv2D(4, 3, strides=2, name="c"), (9, 9, 3)), 4, 8)
    row = kernel_rows(report)["c"]
    assert row["output_shape"] == [None, 4, 4, 4]
    assert (row["weight_bits"], row["activation_bits"]) == (4, 8)  # input counts 8 bits
    assert row["macs"] == 1728
    assert row["bops"] == pytest.approx(1728 * (4 * 8 + 4 + 8 + math.log2(27)), rel=1e-12)
    assert row["bops_simple"] == 1728 * 4 * 8 == 55296


def test_dilated_and_same_padded_convs():
    # Dilation 2, kernel 3x2, valid on 10x9: spans 5 and 3, so 6x7 = 42 positions;
    # f = 2 channels * 3 * 2 = 12, MACs = 5 * 42 * 12 = 2520.
    conv = L.Conv2D(5, (3, 2), dilation_rate=2, name="c")
    row = kernel_rows(bops.summary(single(conv, (10, 9, 2)), 3, 3, input_bits=3))["c"]
    assert row["macs"] == 2520
    assert row["bops"] == pytest.approx(2520 * (9 + 3 + 3 + math.log2(12)), rel=1e-12)
    # Stride 2, same padding on 9x9: ceil(9 / 2) = 5, so 25 positions; f = 27.
    conv = L.Conv2D(4, 3, strides=2, padding="same", name="c")
    assert kernel_rows(bops.summary(single(conv, (9, 9, 3)), 3, 3))["c"]["macs"] == 4 * 25 * 27


def test_depthwise_conv():
    # 6x6x4, 3x3 depthwise, multiplier 2, same: 8 output channels, each over n = 1 input
    # channel: f = 9, 36 positions, MACs = 8 * 36 * 9 = 2592.
    layer = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")
    row = kernel_rows(bops.summary(single(layer, (6, 6, 4)), 3, 5, input_bits=5))["dw"]
    assert row["macs"] == 2592
    assert row["bops"] == pytest.approx(2592 * (3 * 5 + 3 + 5 + math.log2(9)), rel=1e-12)
    assert row["bops"] == pytest.approx(bops.depthwise_bops(4, 3, 3, 3, 5, 36, multiplier=2))


def test_dense_layer():
    # 32 -> 10: MACs = 320, f = 32, log2 32 = 5: BOPs = 320 * (2*4 + 2 + 4 + 5) = 6080 exactly.
    row = kernel_rows(bops.summary(single(L.Dense(10, name="fc"), (32,)), 2, 4, input_bits=4))
    assert row["fc"]["macs"] == 320
    assert row["fc"]["bops"] == 6080
    assert row["fc"]["bops_simple"] == 320 * 2 * 4
    # Dense on a sequence applies per position: 5 positions * 320.
    seq = kernel_rows(bops.summary(single(L.Dense(10, name="fc"), (5, 32)), 2, 4))
    assert seq["fc"]["macs"] == 1600


def test_conv1d_grouped_and_separable():
    # Conv1D(5, 3, stride 2) on length 11, 2 channels: (11 - 3) // 2 + 1 = 5 positions, f = 6.
    row = kernel_rows(bops.summary(single(L.Conv1D(5, 3, strides=2, name="c"), (11, 2)), 4, 8))
    assert row["c"]["macs"] == 5 * 5 * 6
    assert row["c"]["bops"] == pytest.approx(150 * (32 + 12 + math.log2(6)), rel=1e-12)
    # Conv2D(6, 3x3, groups=2) on 5x5x4, same: each output sees 4 / 2 = 2 channels: f = 18.
    row = kernel_rows(bops.summary(single(L.Conv2D(6, 3, padding="same", groups=2, name="g"),
                                          (5, 5, 4)), 4, 4, input_bits=4))
    assert row["g"]["macs"] == 6 * 25 * 18 == 2700
    assert row["g"]["bops"] == pytest.approx(2700 * (16 + 8 + math.log2(18)), rel=1e-12)
    # SeparableConv2D(8, 3x3) on 6x6x4, same: depthwise 4 ch * 36 pos * f 9 = 1296 MACs at
    # 4x8; pointwise 8 ch * 36 pos * f 4 = 1152 MACs fed by the float intermediate (32 bits).
    layer = L.SeparableConv2D(8, 3, padding="same", name="sep")
    row = kernel_rows(bops.summary(single(layer, (6, 6, 4)), 4, 8))["sep"]
    assert [p["macs"] for p in row["parts"]] == [1296, 1152]
    assert [p["activation_bits"] for p in row["parts"]] == [8, 32]
    assert row["macs"] == 2448
    expected = 1296 * (32 + 12 + math.log2(9)) + 1152 * (128 + 36 + math.log2(4))
    assert row["bops"] == pytest.approx(expected, rel=1e-12)
    assert row["bops_simple"] == 1296 * 32 + 1152 * 128


def mixed_model():
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    x = L.ReLU(name="r1")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Conv2D(6, 3, name="c2")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="r2")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Dense(3, name="fc")(x), name="mixed")


def test_mixed_precision_model():
    plan = {"layer_bits": {"c1": (3, 4), "c2": (5, 6)}, "skip_layers": ["fc"]}
    q = uniq_tf.quantize_model(mixed_model(), 4, 8, **plan)
    report = bops.summary(q)
    rows = kernel_rows(report)
    # c1: 3-bit weights on the 8-bit input; 8x8 positions, 4 channels, f = 9.
    # c2: 5-bit weights; its input comes from r1's 4-bit quantizer through max pooling;
    #     4x4 -> valid 3x3 -> 2x2 positions, 6 channels, f = 4 * 9 = 36.
    # fc: skipped, float: 32 x 32, f = 2 * 2 * 6 = 24.
    assert {n: (r["weight_bits"], r["activation_bits"]) for n, r in rows.items()} == {
        "c1": (3, 8), "c2": (5, 4), "fc": (32, 32)}
    assert [rows[n]["macs"] for n in ("c1", "c2", "fc")] == [2304, 864, 72]
    expected = {
        "c1": 2304 * (24 + 11 + math.log2(9)),
        "c2": 864 * (20 + 9 + math.log2(36)),
        "fc": 72 * (1024 + 64 + math.log2(24)),
    }
    for name, value in expected.items():
        assert rows[name]["bops"] == pytest.approx(value, rel=1e-12)
    assert report.total_bops == pytest.approx(sum(expected.values()), rel=1e-12)
    assert report.total_bops_simple == 2304 * 24 + 864 * 20 + 72 * 1024
    # Weight memory: indices + one 2^b-entry 32-bit codebook + 32-bit biases; float fc.
    assert rows["c1"]["weight_memory_bits"] == 36 * 3 + 8 * 32 + 4 * 32
    assert rows["c2"]["weight_memory_bits"] == 216 * 5 + 32 * 32 + 6 * 32
    assert rows["fc"]["weight_memory_bits"] == (72 + 3) * 32
    assert rows["c1"]["codebook_size"] == 8 and rows["fc"]["codebook_size"] is None
    assert report.total_params == mixed_model().count_params()
    # The same plan priced on the float model gives the same report.
    assert bops.summary(mixed_model(), 4, 8, **plan).to_dict() == report.to_dict()


def test_per_channel_codebooks_count_in_memory():
    q = uniq_tf.quantize_model(mixed_model(), 4, 8, per_channel=True)
    row = kernel_rows(bops.summary(q))["c2"]
    assert row["codebooks"] == 6
    assert row["weight_memory_bits"] == 216 * 4 + 6 * 16 * 32 + 6 * 32


def branchy_model():
    inp = keras.Input((6, 6, 2))
    a = L.Conv2D(4, 1, name="a")(inp)
    a = L.ReLU(name="a_relu")(a)
    b = L.Conv2D(4, 1, activation="relu", name="b")(inp)  # fused: its own output quantizer
    x = L.Add(name="add")([a, b])
    c = L.Conv2D(4, 1, name="c")(x)  # no activation: its output is a float accumulator
    y = L.Concatenate(name="cat")([x, c])
    y = L.Conv2D(2, 1, name="d")(y)
    return keras.Model(inp, y, name="branchy")


def test_merges_take_the_widest_input_and_unquantized_producers_count_32():
    plan = {"layer_bits": {"a": (4, 3), "b": (4, 6)}}
    rows = kernel_rows(bops.summary(branchy_model(), 4, 5, **plan))
    assert rows["c"]["activation_bits"] == 6  # Add of 3-bit and 6-bit activations
    assert rows["d"]["activation_bits"] == 32  # Concatenate with the float output of c
    q = uniq_tf.quantize_model(branchy_model(), 4, 5, **plan)
    assert bops.summary(q).to_dict() == bops.summary(branchy_model(), 4, 5, **plan).to_dict()


def test_float_layers_feed_32_bit_activations():
    inp = keras.Input((5, 5, 2))
    x = L.Conv2D(3, 1, activation="relu", name="skipped")(inp)  # float: its ReLU too
    x = L.Conv2D(3, 1, name="after_float")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Activation("softmax", name="softmax")(x)  # not quantized, changes the grid
    model = keras.Model(inp, L.Dense(2, name="after_softmax")(x))
    rows = kernel_rows(bops.summary(model, 4, 8, skip_layers=["skipped"]))
    assert {n: (r["weight_bits"], r["activation_bits"]) for n, r in rows.items()} == {
        "skipped": (32, 32), "after_float": (4, 32), "after_softmax": (4, 32)}


def nested_model():
    inner_in = keras.Input((4, 4, 3))
    x = L.MaxPooling2D(2, name="inner_pool")(inner_in)
    x = L.Conv2D(5, 1, name="inner_conv")(x)
    x = L.ReLU(name="inner_relu")(x)
    backbone = keras.Model(inner_in, x, name="backbone")
    inp = keras.Input((4, 4, 2))
    x = L.Conv2D(3, 1, activation="relu", name="stem")(inp)
    x = backbone(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x), name="outer")


def test_walk_crosses_nested_model_boundaries():
    plan = {"layer_bits": {"stem": (4, 5), "inner_conv": (4, 7)}}
    q = uniq_tf.quantize_model(nested_model(), 4, 8, **plan)
    report = bops.summary(q)
    assert [row["name"] for row in report.layers] == [
        "stem", "inner_pool", "inner_conv", "inner_relu", "flat", "head"]
    rows = kernel_rows(report)
    assert rows["inner_conv"]["activation_bits"] == 5  # into the backbone: stem's quantizer
    assert rows["head"]["activation_bits"] == 7  # out of the backbone: inner_relu's quantizer
    assert rows["inner_conv"]["macs"] == 5 * 4 * 3


def test_a_shared_nested_model_is_priced_per_call_with_each_calls_input():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.ReLU(name="ir")(L.Dense(3, name="id")(inner_in)))
    a, b = keras.Input((4,)), keras.Input((4,))
    x = L.Concatenate(name="cat")([inner(L.ReLU(name="ra")(a)), inner(b)])
    model = keras.Model([a, b], L.Dense(2, name="head")(x))
    plan = {"layer_bits": {"ra": (None, 3), "id": (4, 6)}, "input_bits": 5}
    rows = kernel_rows(bops.summary(model, 4, 8, **plan))
    assert {n: r["activation_bits"] for n, r in rows.items()} == {
        "id": 3, "id[call 2]": 5, "head": 6}
    assert sum(r["macs"] for r in rows.values()) == 12 + 12 + 12


def test_float_model_counts_32_by_32():
    report = bops.summary(mixed_model())
    for row in kernel_rows(report).values():
        assert (row["weight_bits"], row["activation_bits"]) == (32, 32)
        assert row["codebook_size"] is None
    assert report.total_bops_simple == report.total_macs * 1024
    assert report.total_weight_memory_bits == report.total_params * 32


# --------------------------------------------------------------------------- invariants

dims = st.integers(1, 64)
bit_widths = st.integers(1, 31)  # w + 1 stays a valid width


@settings(max_examples=60, deadline=None)
@given(m=dims, n=dims, k_h=st.integers(1, 7), k_w=st.integers(1, 7), p=dims,
       w=bit_widths, a=bit_widths, w2=bit_widths, a2=bit_widths)
def test_bops_terms_scale_as_the_formula_says(m, n, k_h, k_w, p, w, a, w2, a2):
    f = n * k_h * k_w
    macs = bops.conv_macs(m, n, k_h, k_w, p)
    assert macs == m * p * f
    bop = lambda bw, ba: bops.conv_bops(m, n, k_h, k_w, bw, ba, p)  # noqa: E731
    scale = max(abs(bop(w, a)), 1.0) * 1e-12
    # The multiplication term is the only one in b_w * b_a: the mixed difference isolates it.
    mixed = bop(w, a) - bop(w, a2) - bop(w2, a) + bop(w2, a2)
    assert mixed == pytest.approx(macs * (w - w2) * (a - a2), abs=4 * scale)
    # One more weight bit adds b_a multiplications' worth plus one accumulator bit per MAC.
    assert bop(w + 1, a) - bop(w, a) == pytest.approx(macs * (a + 1), abs=4 * scale)
    # Paper minus simple = the additions: MACs * (b_a + b_w + log2 f).
    paper_minus_simple = bop(w, a) - bops.simple_bops(macs, w, a)
    assert paper_minus_simple == pytest.approx(macs * (w + a + math.log2(f)), abs=4 * scale)


@settings(max_examples=40, deadline=None)
@given(g=st.integers(1, 8), m_g=st.integers(1, 16), n_g=st.integers(1, 16),
       k=st.integers(1, 5), p=dims, w=bit_widths, a=bit_widths)
def test_grouped_conv_is_the_sum_of_its_groups(g, m_g, n_g, k, p, w, a):
    grouped = bops.conv_bops(g * m_g, g * n_g, k, k, w, a, p, groups=g)
    assert grouped == pytest.approx(g * bops.conv_bops(m_g, n_g, k, k, w, a, p), rel=1e-12)
    if m_g == 1 and n_g == 1:
        assert grouped == pytest.approx(bops.depthwise_bops(g, k, k, w, a, p), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 4),
       dilation=st.integers(1, 3), padding=st.sampled_from(["valid", "same"]))
def test_conv_output_length_matches_keras(length, kernel, stride, dilation, padding):
    if stride > 1 and dilation > 1:
        dilation = 1  # Keras forbids strides > 1 together with dilation > 1
    if padding == "valid" and (kernel - 1) * dilation + 1 > length:
        return
    layer = L.Conv1D(1, kernel, strides=stride, padding=padding, dilation_rate=dilation)
    keras_length = layer.compute_output_shape((None, length, 1))[1]
    assert bops.conv_output_length(length, kernel, stride, padding, dilation) == keras_length


layer_specs = st.lists(
    st.tuples(st.sampled_from(["conv", "depthwise", "dense"]), st.integers(1, 6),
              st.integers(1, 3), st.integers(1, 2), st.integers(1, 8), st.integers(2, 8)),
    min_size=1, max_size=4,
)


@settings(max_examples=10, deadline=None)
@given(specs=layer_specs, size=st.integers(6, 12), channels=st.integers(1, 4),
       input_bits=st.integers(2, 16))
def test_model_total_is_the_sum_of_independently_priced_layers(specs, size, channels,
                                                               input_bits):
    keras.backend.clear_session()
    inp = keras.Input((size, size, channels))
    x, layer_bits, expected, expected_simple, a_in = inp, {}, 0.0, 0, input_bits
    for i, (kind, filters, kernel, stride, w, a) in enumerate(specs):
        name = f"l{i}"
        h, cin = x.shape[1], x.shape[-1]
        if kind == "dense" or h < kernel:
            if x.shape.rank > 2:
                x = L.Flatten(name=f"flat{i}")(x)
            n_in = x.shape[-1]
            x = L.Dense(filters, name=name)(x)
            macs, cost = bops.dense_macs(n_in, filters), bops.dense_bops(n_in, filters, w, a_in)
        else:
            out = bops.conv_output_length(h, kernel, stride, "valid")
            if kind == "conv":
                x = L.Conv2D(filters, kernel, strides=stride, name=name)(x)
                macs = bops.conv_macs(filters, cin, kernel, kernel, out * out)
                cost = bops.conv_bops(filters, cin, kernel, kernel, w, a_in, out * out)
            else:
                x = L.DepthwiseConv2D(kernel, strides=stride, name=name)(x)
                macs = bops.depthwise_macs(cin, kernel, kernel, out * out)
                cost = bops.depthwise_bops(cin, kernel, kernel, w, a_in, out * out)
            assert x.shape[1] == out
        x = L.ReLU(name=f"relu{i}")(x)
        layer_bits[name] = (w, a)
        expected += cost
        expected_simple += macs * w * a_in
        a_in = a
        if x.shape.rank == 2:
            break
    model = keras.Model(inp, x)
    report = bops.summary(model, 4, 8, layer_bits=layer_bits, input_bits=input_bits)
    assert report.total_bops == pytest.approx(expected, rel=1e-12)
    assert report.total_bops == pytest.approx(sum(r["bops"] for r in report.layers), rel=1e-12)
    assert report.total_bops_simple == expected_simple


# --------------------------------------------------------------------------- qonnx


def _qonnx_graph():
    """The qonnx twin of :func:`qonnx_twin` in NCHW: Quant on the input (8-bit unsigned), on
    every weight (signed, the layer's b_w) and after every ReLU (unsigned, the plan's b_a)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def quant(x, out, bits, signed, scale=0.05):
        args = [x, const(f"{out}_s", scale), const(f"{out}_z", 0.0), const(f"{out}_b", bits)]
        nodes.append(helper.make_node("Quant", args, [out], domain="qonnx.custom_op.general",
                                      signed=signed, narrow=0, rounding_mode="ROUND"))
        return out

    def weight(name, shape, bits):
        return quant(const(name, rng.normal(size=shape)), f"{name}_q", bits, 1)

    def conv(x, w, out, k, stride=1, pad=0, group=1, dilation=1, bias=None):
        nodes.append(helper.make_node(
            "Conv", [x, w] + ([bias] if bias else []), [out], kernel_shape=[k, k],
            strides=[stride] * 2, pads=[pad] * 4, group=group, dilations=[dilation] * 2))
        return out

    def relu_quant(x, out, bits):
        nodes.append(helper.make_node("Relu", [x], [f"{out}_relu"]))
        return quant(f"{out}_relu", out, bits, 0)

    h = quant("x", "xq", 8, 0, 1 / 255)
    h = conv(h, weight("w1", (8, 3, 3, 3), 4), "c1", 3, stride=2, pad=1,
             bias=const("b1", np.zeros(8)))
    h = relu_quant(h, "a1", 4)
    nodes.append(helper.make_node("MaxPool", [h], ["p1"], kernel_shape=[2, 2], strides=[2, 2]))
    h = conv("p1", weight("w2", (8, 1, 3, 3), 3), "c2", 3, pad=1, group=8)
    h = relu_quant(h, "a2", 5)
    h = conv(h, weight("w3", (16, 4, 3, 3), 2), "c3", 3, pad=2, group=2, dilation=2)
    h = relu_quant(h, "a3", 6)
    nodes.append(helper.make_node("Flatten", [h], ["flat"]))
    nodes.append(helper.make_node("MatMul", ["flat", weight("w4", (256, 10), 5)], ["mm"]))
    nodes.append(helper.make_node("Add", ["mm", const("b4", np.zeros(10))], ["y"]))
    graph = helper.make_graph(
        nodes, "twin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 13), helper.make_opsetid("qonnx.custom_op.general", 1)])


def qonnx_twin():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", name="c1")(inp)
    x = L.ReLU(name="r1")(x)
    x = L.MaxPooling2D(2, name="p1")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="c2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.Conv2D(16, 3, padding="same", groups=2, dilation_rate=2, use_bias=False, name="c3")(x)
    x = L.ReLU(name="r3")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Dense(10, name="fc")(x), name="twin")


def test_simple_bops_equal_qonnx_inference_cost_exactly():
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.inference_cost import inference_cost

    # qonnx prices each Conv/MatMul at (input tensor's datatype width) x (weight Quant's bit
    # width) x MACs; biases, Add, MaxPool, Relu and Quant cost nothing; MaxPool passes the
    # datatype through. discount_sparsity=False: by default it drops MACs of zero weights.
    cost = inference_cost(ModelWrapper(_qonnx_graph()), discount_sparsity=False,
                          cost_breakdown=True)
    total = cost["total_cost"]
    assert total["unsupported"] == "set()"
    plan = {"c1": (4, 4), "c2": (3, 5), "c3": (2, 6), "fc": (5, 8)}
    report = bops.summary(qonnx_twin(), 4, 8, layer_bits=plan, input_bits=8)
    assert report.total_macs == total["total_macs"] == 13824 + 1152 + 9216 + 2560
    assert report.total_bops_simple == total["total_bops"]
    per_node = sorted(node["total_bops"] for node in cost["node_cost"].values())
    assert per_node == sorted(float(r["bops_simple"]) for r in kernel_rows(report).values())
    # qonnx's weight memory is kernel elements x Quant bits; ours adds codebooks and biases.
    extras = sum(2 ** r["weight_bits"] * 32 * r["codebooks"] for r in kernel_rows(report).values())
    biases = (8 + 8 + 10) * 32
    assert report.total_weight_memory_bits == total["total_mem_w_bits"] + extras + biases


# --------------------------------------------------------------------------- published sizes


def test_macs_at_224_match_published_counts():
    resnet = bops.summary(models.resnet18((224, 224, 3), 1000))
    mobilenet = bops.summary(models.mobilenet_v1((224, 224, 3), 1000))
    assert resnet.total_macs == pytest.approx(1.82e9, rel=0.01)  # measured 1,814,073,344
    assert mobilenet.total_macs == pytest.approx(569e6, rel=0.01)  # measured 568,740,352
    assert mobilenet.total_params == 4_253_864  # keras.applications MobileNet, BN included


# --------------------------------------------------------------------------- report formats


def test_report_as_dict_json_csv_and_table(tmp_path):
    report = bops.summary(mixed_model(), 4, 8)
    data = json.loads(report.to_json(tmp_path / "r.json"))
    assert data == json.loads((tmp_path / "r.json").read_text())
    assert data["total_bops"] == pytest.approx(report.total_bops)
    assert data["total_macs"] == report.total_macs == 2304 + 864 + 72
    assert [row["name"] for row in data["layers"]] == [
        "c1", "r1", "pool", "c2", "bn", "r2", "flat", "fc"]
    rows = list(csv.DictReader(io.StringIO(report.to_csv(tmp_path / "r.csv"))))
    assert [r["name"] for r in rows] == [row["name"] for row in report.layers]
    assert rows[0]["output_shape"] == "8x8x4" and int(rows[0]["macs"]) == 2304
    assert list(rows[0]) == list(bops.CSV_COLUMNS)
    table = str(report)
    for text in ("c1", "Conv2D", "(8, 8, 4)", "Total MACs: 3,240", "Codebook"):
        assert text in table
    assert "total_bops" in repr(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temp files


# --------------------------------------------------------------------------- bad input


def test_unknown_shapes_say_to_build_with_a_fixed_input_shape():
    model = single(L.Conv2D(4, 3, name="c"), (None, None, 3))
    with pytest.raises(ValueError, match=r"'c' \(Conv2D\).*unknown.*fixed input shape"):
        bops.summary(model)
    unbuilt = keras.Sequential([L.Dense(3)])
    with pytest.raises(ValueError, match="not built.*fixed input shape"):
        bops.summary(unbuilt)

    class Sub(keras.Model):
        def call(self, x):
            return x

    sub = Sub()
    sub(np.zeros((1, 2), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        bops.summary(sub)
    with pytest.raises(TypeError, match="tf_keras.Model"):
        bops.summary("not a model")


@pytest.mark.parametrize("kwargs, match", [
    ({"weight_bits": 4}, "both weight_bits and activation_bits"),
    ({"weight_bits": 0, "activation_bits": 8}, r"weight_bits must be an integer in 1\.\.16, got 0"),
    ({"weight_bits": 17, "activation_bits": 8}, r"weight_bits must be an integer in 1\.\.16"),
    ({"weight_bits": 4.5, "activation_bits": 8}, "weight_bits must be an integer"),
    ({"weight_bits": 4, "activation_bits": 1}, r"activation_bits must be an integer in 2\.\.16"),
    ({"weight_bits": 4, "activation_bits": 8, "layer_bits": {"nope": (4, 8)}},
     r"Unknown layer names \['nope'\]"),
    ({"weight_bits": 4, "activation_bits": 8, "layer_bits": {"c1": 4}}, "must be a pair"),
    ({"weight_bits": 4, "activation_bits": 8, "layer_bits": {"c1": (4, 99)}},
     r"layer_bits\['c1'\]\[1\] must be an integer in 2\.\.16"),
    ({"weight_bits": 4, "activation_bits": 8, "input_bits": 0},
     r"input_bits must be an integer in 1\.\.32, got 0"),
    ({"input_bits": 33}, r"input_bits must be an integer in 1\.\.32, got 33"),
])
def test_bad_bit_specs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bops.summary(mixed_model(), **kwargs)


def test_bits_for_a_quantized_model_are_rejected():
    q = uniq_tf.quantize_model(single(L.Dense(3, name="fc"), (4,)), 4, 8)
    with pytest.raises(ValueError, match="already quantized.*float models only"):
        bops.summary(q, 4, 8)


def test_models_quantized_by_tfmot_itself_are_rejected():
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(single(L.Dense(3, name="fc"), (4,)))
    with pytest.raises(ValueError, match="TFMOT's own 8-bit.*weight_bits=8, activation_bits=8"):
        bops.summary(qat)


def test_pure_functions_reject_bad_shapes():
    with pytest.raises(ValueError, match="n=6 are not divisible by groups=4"):
        bops.conv_bops(8, 6, 3, 3, 4, 8, 10, groups=4)
    with pytest.raises(ValueError, match="m must be a positive integer"):
        bops.conv_macs(0, 3, 3, 3, 1)
    with pytest.raises(ValueError, match=r"b_w must be an integer in 1\.\.32"):
        bops.dense_bops(4, 4, 64, 8)
    with pytest.raises(ValueError, match="padding must be"):
        bops.conv_output_length(8, 3, padding="full")


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
