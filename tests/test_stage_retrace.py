"""Stage changes without retracing: GradualQuantization's frozen set lives in
tf.Variables read inside the traced step, so a staged run traces its train function once per
fit, and frozen kernels and their optimizer slots stay bit-identical, with SGD momentum, Adam,
decoupled weight decay and L2 regularizers, under mixed_float16, jit_compile and (in a child
process with 2 logical CPUs) MirroredStrategy.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import uniq_tf
from bench.common import count_traces
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import float_kernel, kernel_wrappers
from uniq_tf.schedule.gradual import GradualQuantization

KERNELS = ["conv1", "conv2", "fc1", "fc2"]
N_TRAIN, BATCH = 128, 32
# One-layer stages of 2 epochs and a final epoch: stages [0, 0, 1, 1, 2, 2, 3, 3, 4].
PER_STAGE, FINAL = 2, 1
STAGES = [0, 0, 1, 1, 2, 2, 3, 3, 4]
EPOCHS = len(STAGES)


def float_model():
    keras.utils.set_random_seed(1)
    l2 = keras.regularizers.L2(1e-3)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv1", kernel_regularizer=l2)(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2",
                            kernel_regularizer=l2)(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1", kernel_regularizer=l2)(x)
    out = keras.layers.Dense(10, name="fc2", kernel_regularizer=l2, dtype="float32")(x)
    return keras.Model(inp, out)


def optimizer(name):
    if name == "sgd":
        return keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=0.05)
    if name == "adam":
        return keras.optimizers.Adam(0.01, weight_decay=0.05)
    if name == "legacy_sgd":
        return keras.optimizers.legacy.SGD(0.05, momentum=0.9)
    raise ValueError(name)


def slots(model, variable):
    """The optimizer's slot values of ``variable`` (momentum, m, v), by name."""
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if hasattr(inner, "get_slot_names"):
        return {n: inner.get_slot(variable, n).numpy().copy() for n in inner.get_slot_names()}
    index = inner._index_dict[inner._var_key(variable)]
    lists = {"momentums": "m", "_momentums": "m", "_velocities": "v"}
    return {short: getattr(inner, attr)[index].numpy().copy()
            for attr, short in lists.items() if getattr(inner, attr, None)}


class Probe(keras.callbacks.Callback):
    """Per epoch end: kernels, their slots, the train function and its trace count."""

    def __init__(self, traces):
        super().__init__()
        self.traces, self.rows = traces, []

    def on_epoch_end(self, epoch, logs=None):
        kernels = {w.layer.name: float_kernel(w) for w in kernel_wrappers(self.model)}
        self.rows.append({
            "kernel": {n: k.numpy().copy() for n, k in kernels.items()},
            "slots": {n: slots(self.model, k) for n, k in kernels.items()},
            "function": self.model.train_function,
            "traces": self.traces[0],
            "bias": self.model.get_layer("fc2").layer.bias.numpy().copy(),
        })


def staged_run(digits, optimizer_name="sgd", jit_compile=False, prebuild=True):
    x, y = digits[0][:N_TRAIN], digits[1][:N_TRAIN]
    model = uniq_tf.quantize_model(float_model(), weight_bits=3)
    model.compile(optimizer(optimizer_name),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    if prebuild:
        # With the optimizer and the metrics built, tf.function creates no variable while
        # tracing, which would make it trace twice.
        build = getattr(model.optimizer, "build", None) or model.optimizer._create_all_weights
        build(model.trainable_variables)
        model.evaluate(x[:BATCH], y[:BATCH], verbose=0)
    traces = count_traces(model)
    probe = Probe(traces)
    schedule = GradualQuantization("layer", epochs_per_stage=PER_STAGE, final_epochs=FINAL,
                                   polish_epochs=0, verbose=0)
    assert schedule.total_epochs(model) == EPOCHS
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[schedule, probe])
    return model, schedule, probe


def assert_frozen_exactly(probe, check_slots=True):
    """Each kernel is bit-identical (with its slots) from the end of its stage on, and
    moved in every epoch before."""
    rows = probe.rows
    for i, name in enumerate(KERNELS):
        last = max(e for e, s in enumerate(STAGES) if s == i)  # last epoch of its stage
        for epoch in range(last + 1, EPOCHS):
            assert np.array_equal(rows[epoch]["kernel"][name], rows[last]["kernel"][name]), (
                name, epoch)
            if check_slots:
                for slot, value in rows[last]["slots"][name].items():
                    assert np.array_equal(rows[epoch]["slots"][name][slot], value), (
                        name, slot, epoch)
        for epoch in range(1, last + 1):
            assert not np.array_equal(rows[epoch]["kernel"][name],
                                      rows[epoch - 1]["kernel"][name]), (name, epoch)
    # The final epoch still trains the biases.
    assert not np.array_equal(rows[-1]["bias"], rows[-2]["bias"])


def assert_traced_once(probe):
    rows = probe.rows
    assert [r["traces"] for r in rows] == [1] * EPOCHS
    assert all(r["function"] is rows[0]["function"] for r in rows)
    assert rows[0]["function"].experimental_get_tracing_count() == 1


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "legacy_sgd"])
def test_staged_run_traces_once_and_freezes_kernels_and_slots(digits, optimizer_name):
    model, _, probe = staged_run(digits, optimizer_name)
    assert_traced_once(probe)
    assert_frozen_exactly(probe)
    names = {n for n in probe.rows[0]["slots"]["conv1"]}
    assert names == ({"m", "v"} if optimizer_name == "adam" else {"momentum"}
                     if optimizer_name == "legacy_sgd" else {"m"})


def test_without_prebuilt_variables_only_the_first_epoch_traces(digits):
    """fit's first step creates the optimizer's and metrics' variables (tf.function traces
    twice then); no later epoch traces."""
    _, _, probe = staged_run(digits, prebuild=False)
    traces = [r["traces"] for r in probe.rows]
    assert traces == [traces[0]] * EPOCHS and traces[0] <= 2
    assert_frozen_exactly(probe)


def test_after_fit_nothing_is_frozen_and_the_patched_function_is_dropped(digits):
    model, schedule, _ = staged_run(digits)
    assert "apply_gradients" not in vars(model.optimizer)
    assert model.train_function is None
    assert schedule._frozen.flags and not any(
        bool(f.numpy()) for f in schedule._frozen.flags.values())
    # A later fit without the callback trains every kernel again.
    before = {n: float_kernel(model.get_layer(n)).numpy().copy() for n in KERNELS}
    x, y = digits[0][:N_TRAIN], digits[1][:N_TRAIN]
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    for name in KERNELS:
        assert not np.array_equal(float_kernel(model.get_layer(name)).numpy(), before[name])


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_mixed_float16_staged_run_traces_once_and_freezes(digits, mixed_float16, jit):
    model, _, probe = staged_run(digits, jit_compile=jit)
    assert model.get_layer("conv2").compute_dtype == "float16"
    assert_traced_once(probe)
    assert_frozen_exactly(probe)


@pytest.mark.slow
def test_jit_compiled_staged_run_traces_once_and_freezes(digits):
    _, _, probe = staged_run(digits, "adam", jit_compile=True)
    assert_traced_once(probe)
    assert_frozen_exactly(probe)


# ---------------------------------------------------------------- MirroredStrategy (child)


def _child(results_path):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[:N_TRAIN] / 16.0).astype("float32")[..., None]
    y = data.target[:N_TRAIN].astype("int32")
    with strategy.scope():
        model = uniq_tf.quantize_model(float_model(), weight_bits=3)
        model.compile(optimizer("sgd"), keras.losses.SparseCategoricalCrossentropy(True))
    traces = count_traces(model)
    rows = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = {}
            for wrapper in kernel_wrappers(model):
                kernel = float_kernel(wrapper)
                inner = model.optimizer
                momentum = inner.momentums[inner._index_dict[inner._var_key(kernel)]]
                row[wrapper.layer.name] = {
                    "kernel": [c.numpy().tolist() for c in kernel.values],
                    "momentum": [c.numpy().tolist() for c in momentum.values],
                }
            rows.append({"traces": traces[0], "layers": row})

    schedule = GradualQuantization("layer", epochs_per_stage=PER_STAGE, final_epochs=FINAL,
                                   polish_epochs=0, verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[schedule, Record()])
    Path(results_path).write_text(json.dumps({"replicas": strategy.num_replicas_in_sync,
                                              "rows": rows}))


@pytest.mark.slow
def test_mirrored_strategy_staged_run_traces_once_and_freezes_every_replica(tmp_path):
    path = tmp_path / "results.json"
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])  # bench.common
    result = subprocess.run([sys.executable, __file__, str(path)], capture_output=True,
                            text=True, timeout=300, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(path.read_text())
    assert out["replicas"] == 2
    rows = out["rows"]
    traces = [r["traces"] for r in rows]  # train_step runs once per replica in a trace
    assert traces == [traces[0]] * EPOCHS and traces[0] <= 2 * out["replicas"]
    for i, name in enumerate(KERNELS):
        last = max(e for e, s in enumerate(STAGES) if s == i)
        for epoch, row in enumerate(rows):
            layer = row["layers"][name]
            assert layer["kernel"][0] == layer["kernel"][1], (name, epoch)  # replicas agree
            if epoch > last:
                for key in ("kernel", "momentum"):
                    assert layer[key] == rows[last]["layers"][name][key], (name, key, epoch)
            elif epoch > 0:
                assert layer["kernel"] != rows[epoch - 1]["layers"][name]["kernel"], (name,
                                                                                     epoch)


if __name__ == "__main__":
    _child(sys.argv[1])
