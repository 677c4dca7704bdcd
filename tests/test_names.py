"""The float model's names address the quantized layers: a split SeparableConv2D's name means
both halves in every entry point that takes names, through one resolver; a half's own name
means that half. And TFMOT's pattern of annotating a partly annotated model keeps what the
user annotated."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

import uniq_tf
from uniq_tf import ActMode, Mode
from uniq_tf._keras import keras
from uniq_tf.integration import names
from uniq_tf.integration.inspection import kernel_wrappers, output_quantizers, wrappers

L = keras.layers


def separable_model():
    inputs = keras.Input((9, 9, 3))
    h = L.SeparableConv2D(5, 3, activation="relu", name="sep")(inputs)
    h = L.ReLU(name="relu")(L.Conv2D(4, 3, name="conv")(h))
    return keras.Model(inputs, L.Dense(3, name="fc")(L.Flatten()(h)), name="separable")


@pytest.fixture
def quantized():
    return uniq_tf.quantize_model(separable_model(), 4, 8)


def test_the_resolver_maps_a_split_name_to_both_halves(quantized):
    both = [w.layer.name for w in names.resolve(quantized, ["sep"])]
    assert both == ["sep_depthwise", "sep"]
    assert [w.layer.name for w in names.resolve(quantized, "sep_depthwise")] == ["sep_depthwise"]
    assert names.kernel_layer_names(quantized) == ["sep", "conv", "fc"]
    with pytest.raises(ValueError, match=r"No quantized layers named \['nope'\]"):
        names.resolve(quantized, ["nope"])


def test_modes_and_grids_set_both_halves_by_the_float_name(quantized):
    uniq_tf.set_weight_mode(quantized, Mode.FLOAT, layers=["sep"])
    modes = uniq_tf.weight_modes(quantized)
    assert modes["sep_depthwise"] == modes["sep"] == Mode.FLOAT
    assert modes["conv"] == Mode.NOISY
    assert uniq_tf.set_grid_bits(quantized, 5, layers=["sep"]) == {"sep_depthwise": 5, "sep": 5}
    grids = {k: c.grid_bits for k, c in uniq_tf.get_codebooks(quantized).items()}
    assert grids == {"sep_depthwise": 5, "sep": 5, "conv": None, "fc": None}
    uniq_tf.set_activation_mode(quantized, ActMode.FLOAT, layers=["sep"])
    act = {w.layer.name: int(v["act_mode"].numpy())
           for w in wrappers(quantized) for _, v in output_quantizers(w)}
    assert act["sep"] == ActMode.FLOAT and act["relu"] == ActMode.QUANTIZED


def test_stages_name_the_float_layers_and_keep_the_halves_together(quantized):
    schedule = uniq_tf.GradualQuantization("layer")
    assert schedule.plan(quantized) == [["sep"], ["conv"], ["fc"]]
    explicit = uniq_tf.GradualQuantization([["sep", "conv"], ["fc"]],
                                           epochs_per_stage=1, final_epochs=0, verbose=0)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(uniq_tf.weight_modes(self.model))

    quantized.compile("sgd", keras.losses.MeanSquaredError())
    x = np.random.default_rng(0).normal(size=(8, 9, 9, 3)).astype(np.float32)
    quantized.fit(x, np.zeros((8, 3), np.float32), epochs=2, verbose=0,
                  callbacks=[explicit, Probe()])
    first, second = seen
    assert first["sep_depthwise"] == first["sep"] == first["conv"] == Mode.NOISY
    assert first["fc"] == Mode.FLOAT
    assert second["sep_depthwise"] == second["sep"] == second["conv"] == Mode.QUANTIZED
    assert second["fc"] == Mode.NOISY


def test_a_partly_annotated_model_keeps_its_annotations_tfmots_way():
    def annotate_conv(layer):
        if layer.name == "conv":
            return uniq_tf.quantize_annotate_layer(layer, weight_bits=2, activation_bits=4)
        return layer

    model = separable_model()
    partly = keras.models.clone_model(model, clone_function=annotate_conv)
    whole = uniq_tf.quantize_annotate_model(partly)  # annotates the rest, keeps conv's bits
    for applied in (uniq_tf.quantize_apply(whole, 4, 8),
                    tfmot.quantization.keras.quantize_apply(
                        whole, scheme=uniq_tf.UniqScheme(4, 8))):
        bits = {k: c.bits for k, c in uniq_tf.get_codebooks(applied).items()}
        assert bits == {"sep_depthwise": 4, "sep": 4, "conv": 2, "fc": 4}
        ranges = {k: v[2] for k, v in uniq_tf.get_activation_ranges(applied).items()}
        assert ranges == {"sep": 8, "relu": 4}
    ours = uniq_tf.quantize_apply(whole, 4, 8)
    direct = uniq_tf.quantize_model(model, 4, 8, layer_bits={"conv": (2, 4)})
    x = np.random.default_rng(0).normal(size=(4, 9, 9, 3)).astype(np.float32)
    for q in (ours, direct):
        uniq_tf.set_weight_mode(q, Mode.QUANTIZED)
    np.testing.assert_allclose(ours(x, training=False), direct(x, training=False), rtol=1e-6)
    assert [w.layer.name for w in kernel_wrappers(ours)] == [
        w.layer.name for w in kernel_wrappers(direct)]
