"""schedule/freezing.py: what GradualQuantization does to the optimizer. A frozen kernel and its
optimizer slots end every step as they began it; the others train; the optimizer gets its own
apply_gradients back; and GradualQuantization(freeze=False) trains earlier stages on."""

import numpy as np
import pytest

import uniq_tf
from uniq_tf import internals
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import float_kernel
from uniq_tf.schedule import freezing

L = keras.layers


def two_dense():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="a", kernel_regularizer="l2")(inputs)
    return keras.Model(inputs, L.Dense(2, name="b")(h))


def data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01),
    lambda: keras.optimizers.Adam(0.01, weight_decay=0.01),
    lambda: keras.optimizers.legacy.SGD(0.1, momentum=0.9),
], ids=["sgd-momentum-decay", "adam-decay", "legacy-sgd"])
def test_a_frozen_kernel_and_its_slots_do_not_move_and_the_rest_trains(make):
    model = two_dense()
    optimizer = make()
    model.compile(optimizer, "mse")
    frozen = freezing.FrozenKernels()
    kernels = [("a", model.get_layer("a").kernel), ("b", model.get_layer("b").kernel)]
    frozen.add(kernels, model.distribute_strategy)
    frozen.install(optimizer)
    frozen.freeze({model.get_layer("a").kernel.ref()})
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # builds the slots, then trains
    kernel_a = model.get_layer("a").kernel
    before = kernel_a.numpy().copy()
    slots = [s.numpy().copy() for s in internals.optimizer_slots(optimizer, kernel_a)]
    others = [model.get_layer("b").kernel.numpy().copy(), model.get_layer("a").bias.numpy().copy()]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(kernel_a.numpy(), before)
    for slot, value in zip(internals.optimizer_slots(optimizer, kernel_a), slots, strict=True):
        np.testing.assert_array_equal(slot.numpy(), value)
    assert not np.array_equal(model.get_layer("b").kernel.numpy(), others[0])
    assert not np.array_equal(model.get_layer("a").bias.numpy(), others[1])
    assert freezing.is_installed(optimizer)
    freezing.remove(optimizer)
    assert not freezing.is_installed(optimizer) and "apply_gradients" not in vars(optimizer)
    frozen.freeze(set())
    model.make_train_function(force=True)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(kernel_a.numpy(), before)


def test_installing_needs_a_compiled_model():
    with pytest.raises(ValueError, match="needs a compiled model"):
        freezing.FrozenKernels().install(None)


@pytest.mark.parametrize("freeze", [True, False])
def test_earlier_stages_freeze_or_train_on_with_their_codebook(freeze):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="a")(inputs)
    q = uniq_tf.quantize_model(keras.Model(inputs, L.Dense(2, name="b")(h)), 3, 8)
    schedule = uniq_tf.GradualQuantization(epochs_per_stage=1, final_epochs=1, freeze=freeze,
                                           verbose=0)
    kernels = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels[epoch] = float_kernel(self.model.get_layer("a")).numpy().copy()

    q.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    x, y = data()
    q.fit(x, y, epochs=schedule.total_epochs(q), batch_size=8, verbose=0,
          callbacks=[schedule, Probe()])
    moved = not np.array_equal(kernels[0], kernels[2])  # epoch 0: stage 0; then a is earlier
    assert moved is not freeze
    assert uniq_tf.weight_modes(q)["a"] == uniq_tf.Mode.QUANTIZED  # hard either way
    assert tf.reduce_all(tf.math.is_finite(kernels[2]))
