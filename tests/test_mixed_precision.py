"""Mixed precision and XLA: staged UNIQ training under mixed_float16 and
mixed_bfloat16, with and without jit_compile, on CPU. Codebooks, noise and activation ranges
stay float32."""

import numpy as np
import pytest

import uniq_tf
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import kernel_wrappers, output_quantizers, wrappers


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(4, 3, name="conv")(inp))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(keras.layers.Flatten()(x))
    return keras.Model(inp, keras.layers.Dense(10, dtype="float32", name="logits")(x))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("jit", [False, True])
def test_staged_training_under_mixed_precision(policy, jit):
    model = uniq_tf.quantize_model(_model(), weight_bits=3, activation_bits=8)
    assert model.get_layer("conv").compute_dtype == policy.split("_")[1]
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1)).astype("f4"), rng.integers(0, 10, 64)
    uniq_tf.calibrate_activations(model, x, verbose=False)
    schedule = uniq_tf.GradualQuantization(epochs_per_stage=2, verbose=0)
    history = model.fit(x, y, epochs=schedule.total_epochs(model), verbose=0,
                        callbacks=[schedule])
    assert np.isfinite(history.history["loss"]).all()
    # Ranges are float32 variables (no autocast), ReLUs' from 0.
    for wrapper in wrappers(model):
        for _, variables in output_quantizers(wrapper):
            assert variables["min_var"].dtype == tf.float32
            assert not hasattr(variables["min_var"], "_variable")  # not an AutoCastVariable
            assert variables["min_var"].numpy() == 0.0 < variables["max_var"].numpy()
    # Every kernel holds exactly its float32 codebook's 8 values in the half-precision forward.
    codebooks = uniq_tf.get_codebooks(model)
    for wrapper in kernel_wrappers(model):
        levels = codebooks[wrapper.layer.name].levels
        assert levels.dtype == np.float32 and len(np.unique(levels)) == 8
    out = model.predict(x[:8], verbose=0)
    stripped = uniq_tf.strip_quantization(model)
    np.testing.assert_allclose(out, stripped.predict(x[:8], verbose=0), atol=0.1)
