"""A quantized SeparableConv2D is split in DepthwiseConv2D ``<name>_depthwise`` + 1x1 Conv2D
``<name>`` (uniq_tf.integration.layout): names, float equivalence, the plan's bits,
codebooks, stripping, BOPs and the FINN export of the split layers."""

import numpy as np
import pytest

import uniq_tf
from uniq_tf import ActMode, Mode
from uniq_tf._keras import keras
from uniq_tf.integration.inspection import kernel_wrappers, wrappers
from uniq_tf.integration.saving import load_quantized

L = keras.layers


def x_batch(shape, n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def separable(name="sep", **kwargs):
    kwargs = {"activation": "relu", **kwargs}
    return L.SeparableConv2D(kwargs.pop("filters", 5), 3, name=name, **kwargs)


def functional(**kwargs):
    inp = keras.Input((9, 9, 3))
    x = separable(**kwargs)(inp)
    x = L.BatchNormalization(name="bn")(x)
    return keras.Model(inp, L.Dense(4, name="fc")(L.Flatten()(x)), name="functional")


def nested():
    inp = keras.Input((9, 9, 3))
    inner_in = keras.Input((9, 9, 3))
    inner = keras.Model(inner_in, separable(padding="same")(inner_in), name="backbone")
    x = L.GlobalAveragePooling2D(name="gap")(inner(inp))
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="outer")


def sequential():
    return keras.Sequential([keras.Input((9, 9, 3)), separable(strides=2), L.Flatten(),
                             L.Dense(4, name="fc")], name="seq")


def randomize(model):
    """Random weights everywhere (a trained model's bias and batch norm are not zero)."""
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0.5, 0.3, w.shape).astype("float32")
                       if "variance" in v.name else rng.normal(0, 0.3, w.shape).astype("float32")
                       for v, w in zip(model.weights, model.get_weights(), strict=True)])
    return model


def float_equivalent(q):
    uniq_tf.set_weight_mode(q, Mode.FLOAT)
    uniq_tf.set_activation_mode(q, ActMode.FLOAT)
    return q


@pytest.mark.parametrize(
    "build",
    [
        functional,
        lambda: functional(strides=2, depth_multiplier=2, use_bias=False),
        lambda: functional(dilation_rate=2, padding="same", activation="relu6"),
        lambda: functional(activation=None, data_format="channels_last"),
        nested,
        sequential,
    ],
    ids=["plain", "strides-multiplier-nobias", "dilation-relu6", "linear", "nested",
         "sequential"],
)
def test_split_names_types_and_float_equivalence(build):
    model = randomize(build())
    q = float_equivalent(uniq_tf.quantize_model(model, weight_bits=2))
    wrapped = {w.layer.name: w.layer for w in kernel_wrappers(q)}
    assert list(wrapped) == ["sep_depthwise", "sep", "fc"]
    depthwise, pointwise = wrapped["sep_depthwise"], wrapped["sep"]
    source = next(layer for layer in uniq_tf.util.graph.layers(model)
                  if layer.name == "sep")
    assert type(depthwise) is L.DepthwiseConv2D and type(pointwise) is L.Conv2D
    assert not depthwise.use_bias and depthwise.activation.__name__ == "linear"
    assert depthwise.strides == source.strides and depthwise.padding == source.padding
    assert depthwise.dilation_rate == source.dilation_rate
    assert depthwise.depth_multiplier == source.depth_multiplier
    assert pointwise.kernel_size == (1, 1) and pointwise.use_bias == source.use_bias
    assert pointwise.activation.__name__ == source.activation.__name__
    x = x_batch((9, 9, 3))
    np.testing.assert_allclose(q(x, training=False).numpy(), model(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert not any(isinstance(layer, L.SeparableConv2D)
                   for layer in uniq_tf.util.graph.layers(q))


def test_the_float_model_is_not_changed():
    model = randomize(functional())
    before = [w.copy() for w in model.get_weights()]
    uniq_tf.quantize_model(model, weight_bits=2)
    assert [layer.name for layer in model.layers][1:] == ["sep", "bn", "flatten", "fc"]
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bits_given_for_the_original_name_set_both_halves():
    model = functional()
    q = uniq_tf.quantize_model(model, weight_bits=4, activation_bits=8,
                               layer_bits={"sep": (2, 5)}, per_channel=True)
    codebooks = uniq_tf.get_codebooks(q)
    assert {k: c.bits for k, c in codebooks.items()} == {"sep_depthwise": 2, "sep": 2, "fc": 4}
    assert codebooks["sep_depthwise"].channel_axes == (2, 3)
    assert codebooks["sep"].channel_axes == (-1,)
    assert {k: v[2] for k, v in uniq_tf.get_activation_ranges(q).items()} == {"sep": 5}
    configs = {w.layer.name: w.quantize_config for w in wrappers(q)}
    assert configs["sep_depthwise"].owner == "sep" and configs["sep"].owner == "sep"
    assert configs["sep_depthwise"].activation_bits is None  # the intermediate stays float
    # summary prices the split model as it prices the float model with the same plan
    report = uniq_tf.summary(q)
    planned = uniq_tf.summary(model, 4, 8, layer_bits={"sep": (2, 5)}, per_channel=True)
    assert report.total_bops == pytest.approx(planned.total_bops, rel=1e-12)
    assert report.total_macs == planned.total_macs
    assert report.total_weight_memory_bits == planned.total_weight_memory_bits
    rows = {row["name"]: row for row in report.layers}
    assert (rows["sep"]["weight_bits"], rows["sep"]["activation_bits"]) == (2, 32)


def test_a_skipped_separable_conv_stays_whole_in_float():
    q = uniq_tf.quantize_model(functional(), weight_bits=3, skip_layers=["sep"])
    assert isinstance(q.get_layer("sep"), L.SeparableConv2D)
    assert [w.layer.name for w in kernel_wrappers(q)] == ["fc"]


def test_a_taken_depthwise_name_is_an_error():
    inp = keras.Input((9, 9, 3))
    x = L.Conv2D(3, 1, name="sep_depthwise")(inp)
    model = keras.Model(inp, separable()(x))
    with pytest.raises(ValueError, match="already has a layer named 'sep_depthwise'"):
        uniq_tf.quantize_model(model)


def test_strip_holds_the_codebook_values_of_both_halves():
    q = uniq_tf.quantize_model(randomize(functional()), weight_bits=2)
    uniq_tf.set_weight_mode(q, Mode.QUANTIZED)
    uniq_tf.set_activation_mode(q, ActMode.FLOAT)
    stripped = uniq_tf.strip_quantization(q)
    codebooks = uniq_tf.get_codebooks(q)
    np.testing.assert_array_equal(stripped.get_layer("sep_depthwise").depthwise_kernel.numpy(),
                                  codebooks["sep_depthwise"].dequantize())
    np.testing.assert_array_equal(stripped.get_layer("sep").kernel.numpy(),
                                  codebooks["sep"].dequantize())
    x = x_batch((9, 9, 3))
    np.testing.assert_allclose(stripped(x, training=False).numpy(),
                               q(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_training_updates_both_halves():
    q = uniq_tf.quantize_model(functional(), weight_bits=3)
    q.compile("sgd", keras.losses.MeanSquaredError())
    before = {n: uniq_tf.integration.inspection.float_kernel(q.get_layer(n), a).numpy().copy()
              for n, a in (("sep_depthwise", "depthwise_kernel"), ("sep", "kernel"))}
    q.fit(x_batch((9, 9, 3), 8), np.ones((8, 4), "float32"), epochs=1, verbose=0)
    for (name, attr), value in zip(
            (("sep_depthwise", "depthwise_kernel"), ("sep", "kernel")), before.values(),
            strict=True):
        kernel = uniq_tf.integration.inspection.float_kernel(q.get_layer(name), attr)
        assert not np.array_equal(kernel.numpy(),
                                  value), name


def test_finn_export_of_the_split_layers(tmp_path):
    fpga_export = pytest.importorskip("fpga_export")
    inp = keras.Input((8, 8, 2))
    x = L.SeparableConv2D(4, 3, depth_multiplier=2, activation="relu", name="sep")(inp)
    model = keras.Model(inp, L.Dense(3, name="fc")(L.Flatten()(x)))
    q = uniq_tf.quantize_model(model, 3)
    uniq_tf.calibrate_activations(q, [np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 2))
                                      .astype("float32")], verbose=False)
    result = fpga_export.export_finn(q, tmp_path / "finn", input_range=(0, 1))
    layers = {row["name"]: row for row in result.descriptor["layers"]}
    assert list(layers) == ["sep_depthwise", "sep", "fc"]
    assert layers["sep_depthwise"]["groups"] == 2 and layers["sep"]["kernel_size"] == [1, 1]


def test_allocation_sensitivity_quantizes_both_halves(monkeypatch):
    from uniq_tf.cost import allocate, sensitivity

    seen = []
    original = sensitivity._hard_kernels

    def recording(wrapper, *args):
        seen.append(wrapper.layer.name)
        return original(wrapper, *args)

    monkeypatch.setattr(sensitivity, "_hard_kernels", recording)
    model = randomize(functional())
    scores, _, _ = allocate.measure_sensitivity(model, x_batch((9, 9, 3), 8),
                                             {"sep": [(2, 8)], "fc": [(2, None)]}, batches=1)
    assert seen == ["sep_depthwise", "sep", "fc"]
    assert scores["sep"][(2, 8)] > 0


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_a_wrapped_separable_conv_of_an_older_model_still_loads_and_strips(tmp_path):
    """Models quantized before the split hold a wrapped SeparableConv2D: loading (.h5),
    codebooks ("layer/attribute" keys) and stripping still work."""
    from uniq_tf.integration import plan as planning
    from uniq_tf.util import graph

    model = randomize(functional())
    configs = planning.plan(model, planning.annotations_for(model), uniq_tf.UniqSettings(2, 8))
    with uniq_tf.quantize_scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        old = graph.clone(copy, lambda layer: planning.QuantizeWrapper(
            layer, configs[layer.name], name_prefix="") if layer.name in configs else layer)
    assert isinstance(old.get_layer("sep").layer, L.SeparableConv2D)
    old.save(tmp_path / "old.h5")
    loaded = load_quantized(tmp_path / "old.h5")
    assert sorted(uniq_tf.get_codebooks(loaded)) == ["fc", "sep/depthwise_kernel",
                                                      "sep/pointwise_kernel"]
    uniq_tf.set_activation_mode(loaded, ActMode.FLOAT)
    stripped = uniq_tf.strip_quantization(loaded)
    x = x_batch((9, 9, 3))
    np.testing.assert_allclose(stripped(x, training=False).numpy(),
                               loaded(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_a_shared_separable_conv_and_an_output_layer_keep_calls_and_output_names():
    a, b = keras.Input((8, 8, 2)), keras.Input((8, 8, 2))
    shared = separable(filters=3)
    ya, yb = shared(a), shared(b)
    head = L.SeparableConv2D(2, 3, name="head")(L.Add(name="add")([ya, yb]))
    model = randomize(keras.Model([a, b], [L.Flatten(name="flat")(ya), head]))
    q = float_equivalent(uniq_tf.quantize_model(model, weight_bits=3))
    assert q.output_names == model.output_names == ["flat", "head"]
    assert len(q.get_layer("sep_depthwise").inbound_nodes) == 2
    x = [x_batch((8, 8, 2), 2, seed) for seed in (1, 2)]
    for got, want in zip(q(x, training=False), model(x, training=False), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
