"""One settings object: every entry point defaults to UniqSettings' values and refuses what the
others refuse, with the same message; the schedule's defaults are the ones uniq-train uses."""

import dataclasses
import inspect

import numpy as np
import pytest

import uniq_tf
from uniq_tf._keras import keras
from uniq_tf.integration.inspection import kernel_wrappers, weight_quantizers
from uniq_tf.method import kquantile
from uniq_tf.method.quantizers import KQuantileWeightQuantizer, SwitchableActivationQuantizer
from uniq_tf.schedule import gradual
from uniq_tf.training.config import TrainConfig

L = keras.layers
DEFAULTS = uniq_tf.UniqSettings()


def small():
    inputs = keras.Input((6, 6, 1))
    h = L.ReLU(name="r")(L.Conv2D(4, 3, name="c")(inputs))
    return keras.Model(inputs, L.Dense(3, name="d")(L.Flatten()(h)))


def test_the_defaults_are_the_measured_best_and_frozen():
    assert dataclasses.astuple(DEFAULTS) == (4, 8, False, "gaussian", "clipped", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.weight_bits = 2
    assert DEFAULTS.replace(high_noise=True).noise_scale == 2.0


def test_every_entry_point_defaults_to_the_settings():
    quantizer = KQuantileWeightQuantizer()
    assert (quantizer.bits, quantizer.distribution, quantizer.noise, quantizer.noise_scale) == (
        DEFAULTS.weight_bits, DEFAULTS.distribution, DEFAULTS.noise, DEFAULTS.noise_scale)
    assert SwitchableActivationQuantizer().bits == DEFAULTS.activation_bits
    for function in (kquantile.add_noise, kquantile.noisy_rows):
        assert inspect.signature(function).parameters["noise"].default == DEFAULTS.noise
    q = uniq_tf.quantize_model(small())
    for wrapper in kernel_wrappers(q):
        for _, used, _ in weight_quantizers(wrapper):
            assert (used.bits, used.noise, used.distribution) == (4, "clipped", "gaussian")
    assert uniq_tf.UniqScheme().settings == DEFAULTS
    config = TrainConfig()
    assert (config.weight_bits, config.activation_bits, config.noise, config.distribution,
            config.per_channel, config.high_noise) == (
        DEFAULTS.weight_bits, DEFAULTS.activation_bits, DEFAULTS.noise, DEFAULTS.distribution,
        DEFAULTS.per_channel, DEFAULTS.high_noise)
    schedule = uniq_tf.GradualQuantization()
    assert (schedule.epochs_per_stage, schedule.final_epochs) == (
        gradual.DEFAULT_EPOCHS_PER_STAGE, gradual.DEFAULT_FINAL_EPOCHS) == (
        config.epochs_per_stage, config.final_epochs) == (2, 2)


def test_the_schedules_arguments_after_stages_are_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        uniq_tf.GradualQuantization("layer", 0, 2, 2)
    kinds = {p.name: p.kind for p in
             inspect.signature(uniq_tf.GradualQuantization).parameters.values()}
    assert kinds.pop("stages") == inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert set(kinds.values()) == {inspect.Parameter.KEYWORD_ONLY}


def _message(call) -> str:
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize("bits", [0, 3.7, 40, True, "4"])
def test_the_quantizer_refuses_what_quantize_model_refuses_with_the_same_message(bits):
    expected = _message(lambda: uniq_tf.UniqSettings(weight_bits=bits))
    assert _message(lambda: KQuantileWeightQuantizer(bits)) == expected
    assert _message(lambda: uniq_tf.quantize_model(small(), bits)) == expected
    assert _message(lambda: uniq_tf.UniqScheme(bits)) == expected
    assert expected.startswith("weight_bits must be an integer in 1..16, got ")


@pytest.mark.parametrize("field, value", [("distribution", "laplace"), ("noise", "wide"),
                                          ("activation_bits", 1), ("per_channel", "yes")])
def test_every_setting_is_checked_once_with_one_message(field, value):
    expected = _message(lambda: uniq_tf.UniqSettings(**{field: value}))
    assert _message(lambda: uniq_tf.quantize_model(small(), **{field: value})) == expected
    annotated = uniq_tf.quantize_annotate_model(small())
    assert _message(lambda: uniq_tf.quantize_apply(annotated, **{field: value})) == expected
    if field in ("distribution", "noise"):
        quantizer_message = _message(lambda: KQuantileWeightQuantizer(4, **{field: value}))
        assert quantizer_message == expected


def test_an_unknown_setting_lists_the_settings():
    with pytest.raises(TypeError, match="unknown UNIQ settings \\['nois'\\]"):
        uniq_tf.quantize_model(small(), nois="clipped")


def test_a_settings_object_and_keyword_overrides_agree():
    settings = uniq_tf.UniqSettings(weight_bits=2, per_channel=True, noise="paper")
    by_object = uniq_tf.quantize_model(small(), settings=settings)
    by_words = uniq_tf.quantize_model(small(), 2, per_channel=True, noise="paper")
    overridden = uniq_tf.quantize_model(small(), 3, settings=settings)
    configs = [
        [q.get_config() for w in kernel_wrappers(model) for _, q, _ in weight_quantizers(w)]
        for model in (by_object, by_words, overridden)
    ]
    assert configs[0] == configs[1]
    assert {c["bits"] for c in configs[2]} == {3}
    assert {c["noise"] for c in configs[2]} == {"paper"}
    priced = uniq_tf.summary(small(), 2, 8, per_channel=True)
    assert priced.total_bops == uniq_tf.summary(by_object).total_bops
    assert np.isclose(priced.total_weight_memory_bits,
                      uniq_tf.summary(by_object).total_weight_memory_bits)
