"""GradualQuantization: the stage schedule, freezing, resuming, tracing and argument checks.

One scheduled run on 8x8 digits (module fixture) is checked epoch by epoch; a second run is
interrupted mid-stage and resumed with BackupAndRestore.
"""

import contextlib
import io

import numpy as np
import pytest

import uniq_tf
from bench.common import count_traces
from uniq_tf._keras import keras, tf
from uniq_tf.integration.inspection import float_kernel, kernel_wrappers
from uniq_tf.method.quantizers import ActMode, Mode
from uniq_tf.schedule.gradual import STAGE_LOG_KEY, GradualQuantization

KERNELS = ["conv1", "conv2", "fc1", "fc2"]
# Schedule of the scheduled run: 1 warm-up epoch, 4 one-layer stages of 2 epochs, 1 final epoch.
WARMUP, PER_STAGE, FINAL = 1, 2, 1
STAGES = [-1, 0, 0, 1, 1, 2, 2, 3, 3, 4]  # written out by hand, per epoch
EPOCHS = len(STAGES)
# Activation quantizer -> the kernel layer it belongs to (None: before any kernel layer).
ACT_OWNER = {"relu_in": None, "relu1": "conv1", "conv2": "conv2", "fc1": "fc1"}
N_TRAIN, BATCH = 256, 64


def float_model():
    keras.utils.set_random_seed(1)
    l2 = keras.regularizers.L2(1e-3)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.ReLU(name="relu_in")(inp)
    x = keras.layers.Conv2D(4, 3, name="conv1", kernel_regularizer=l2)(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(
        8, 3, strides=2, activation="relu", name="conv2", kernel_regularizer=l2
    )(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1", kernel_regularizer=l2)(x)
    out = keras.layers.Dense(10, name="fc2", kernel_regularizer=l2)(x)
    return keras.Model(inp, out)


def quantized_model(float_weights=None):
    base = float_model()
    if float_weights is not None:
        base.set_weights(float_weights)
    model = uniq_tf.quantize_model(base, weight_bits=3)
    # Momentum and decoupled weight decay both move a variable without a fresh gradient.
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class Probe(keras.callbacks.Callback):
    """Records modes, kernels, biases, traces and the logged stage at every epoch."""

    def __init__(self, traces):
        super().__init__()
        self.traces = traces
        self.begin, self.end = {}, {}

    def _snapshot(self):
        wrappers = {w.layer.name: w for w in kernel_wrappers(self.model)}
        return {
            "weight": uniq_tf.weight_modes(self.model),
            "act": uniq_tf.activation_modes(self.model),
            "kernel": {n: float_kernel(w).numpy().copy() for n, w in wrappers.items()},
            "bias": {n: w.layer.bias.numpy().copy() for n, w in wrappers.items()},
            "gamma": self.model.get_layer("bn1").gamma.numpy().copy(),
            "traces": self.traces[0],
        }

    def on_epoch_begin(self, epoch, logs=None):
        self.begin[epoch] = self._snapshot()

    def on_epoch_end(self, epoch, logs=None):
        self.end[epoch] = {**self._snapshot(), "stage": logs.get(STAGE_LOG_KEY)}


class StopAfter(keras.callbacks.Callback):
    """Simulates a crash at the end of an epoch (after BackupAndRestore saved it)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated interruption")


def schedule():
    """The paper's schedule (no straight-through polish)."""
    return GradualQuantization("layer", warmup_epochs=WARMUP, epochs_per_stage=PER_STAGE,
                               final_epochs=FINAL, verbose=1, polish_epochs=0)


@pytest.fixture(scope="module")
def train_data(digits):
    x, y, _, _ = digits
    return x[:N_TRAIN], y[:N_TRAIN]


@pytest.fixture(scope="module")
def initial_weights():
    return float_model().get_weights()


@pytest.fixture(scope="module")
def scheduled_run(train_data, initial_weights, tmp_path_factory):
    x, y = train_data
    model = quantized_model(initial_weights)
    traces = count_traces(model)
    probe = Probe(traces)
    logs_dir = tmp_path_factory.mktemp("tb")
    callbacks = [
        GradualQuantization("layer", warmup_epochs=WARMUP, epochs_per_stage=PER_STAGE,
                               final_epochs=FINAL, verbose=1, log_dir=logs_dir,
                            polish_epochs=0),
        probe,
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = model.fit(
            x, y, batch_size=BATCH, epochs=EPOCHS, callbacks=callbacks, verbose=0, shuffle=False
        )
    return {
        "model": model,
        "probe": probe,
        "history": history.history,
        "stdout": out.getvalue(),
        "logs_dir": logs_dir,
    }


def expected_weight_mode(layer, stage):
    i = KERNELS.index(layer)
    return Mode.QUANTIZED if i < stage else Mode.NOISY if i == stage else Mode.FLOAT


def expected_act_mode(layer, stage):
    owner = ACT_OWNER[layer]
    owner_stage = 0 if owner is None else KERNELS.index(owner)
    return ActMode.QUANTIZED if owner_stage <= stage else ActMode.FLOAT


def test_modes_follow_the_schedule_at_every_epoch(scheduled_run):
    probe = scheduled_run["probe"]
    assert sorted(probe.begin) == list(range(EPOCHS))
    for epoch, stage in enumerate(STAGES):
        for snap in (probe.begin[epoch], probe.end[epoch]):
            assert snap["weight"] == {n: expected_weight_mode(n, stage) for n in KERNELS}, epoch
            assert snap["act"] == {n: expected_act_mode(n, stage) for n in ACT_OWNER}, epoch
    # Spot checks of the table above, independent of the helper functions.
    assert probe.begin[0]["weight"] == dict.fromkeys(KERNELS, Mode.FLOAT)
    assert probe.begin[0]["act"] == dict.fromkeys(ACT_OWNER, ActMode.FLOAT)
    assert probe.begin[5]["weight"] == {
        "conv1": Mode.QUANTIZED,
        "conv2": Mode.QUANTIZED,
        "fc1": Mode.NOISY,
        "fc2": Mode.FLOAT,
    }
    assert probe.begin[9]["weight"] == dict.fromkeys(KERNELS, Mode.QUANTIZED)


def test_stage_is_logged_to_history_tensorboard_and_stdout(scheduled_run):
    assert scheduled_run["history"][STAGE_LOG_KEY] == [float(s) for s in STAGES]
    # Callbacks listed after GradualQuantization (the probe) see it in their epoch logs.
    probe = scheduled_run["probe"]
    assert [probe.end[e]["stage"] for e in range(EPOCHS)] == [float(s) for s in STAGES]
    lines = [ln for ln in scheduled_run["stdout"].splitlines() if "GradualQuantization" in ln]
    assert len(lines) == len(set(STAGES))  # one line per stage change, first epoch included
    assert "warm-up" in lines[0] and "noisy ['conv1']" in lines[1]
    assert "quantized+frozen ['conv1', 'conv2']" in lines[3]
    tags = {}
    for path in scheduled_run["logs_dir"].rglob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                stage = float(tf.make_ndarray(value.tensor))
                tags.setdefault(value.tag, {})[event.step] = stage
    assert tags == {"uniq_stage": {e: float(s) for e, s in enumerate(STAGES)}}


def test_frozen_kernels_are_bit_identical_with_momentum_decay_and_l2(scheduled_run):
    probe = scheduled_run["probe"]
    frozen_checks = 0
    for i, name in enumerate(KERNELS):
        frozen_from = STAGES.index(i + 1)  # first epoch in which the layer's stage is past
        at_freeze = probe.begin[frozen_from]["kernel"][name]
        for epoch in range(frozen_from, EPOCHS):
            assert np.array_equal(probe.end[epoch]["kernel"][name], at_freeze), (name, epoch)
            frozen_checks += 1
        # Before freezing the same kernel moves every epoch: the optimizer does act on it.
        for epoch in range(frozen_from):
            assert not np.array_equal(
                probe.end[epoch]["kernel"][name], probe.begin[epoch]["kernel"][name]
            ), (name, epoch)
    assert frozen_checks == sum(EPOCHS - STAGES.index(i + 1) for i in range(len(KERNELS)))
    # Biases and batch norm stay trainable: the final epoch fine-tunes them.
    last = EPOCHS - 1
    assert not np.array_equal(probe.end[last]["gamma"], probe.begin[last]["gamma"])
    for name in KERNELS:
        assert not np.array_equal(probe.end[last]["bias"][name], probe.begin[last]["bias"][name])


def test_stage_changes_do_not_retrace(scheduled_run):
    """Modes and the frozen flags are variables: the train function is traced in the first
    epoch only (tf.function may trace twice there, while variables are created)."""
    probe = scheduled_run["probe"]
    traces = [probe.end[e]["traces"] for e in range(EPOCHS)]
    assert traces == [traces[0]] * EPOCHS, traces
    assert 1 <= traces[0] <= 2


def test_mode_switches_take_effect_inside_the_traced_function(train_data):
    """Flipping modes between epochs changes the loss of the already traced function."""
    x, y = train_data
    model = uniq_tf.quantize_model(float_model(), weight_bits=1)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True))
    # Float activations: their moving-average ranges would drift between epochs.
    uniq_tf.set_activation_mode(model, ActMode.FLOAT)
    traces = count_traces(model)
    seen = []

    class Flip(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            mode = Mode.FLOAT if epoch % 2 == 0 else Mode.QUANTIZED
            uniq_tf.set_weight_mode(self.model, mode)

        def on_epoch_end(self, epoch, logs=None):
            seen.append(traces[0])

    history = model.fit(
        x, y, batch_size=BATCH, epochs=4, callbacks=[Flip()], verbose=0, shuffle=False
    )
    loss = history.history["loss"]
    assert seen[1:] == [seen[0]] * 3
    assert loss[0] == pytest.approx(loss[2], rel=1e-6)
    assert loss[1] == pytest.approx(loss[3], rel=1e-6)
    assert abs(loss[0] - loss[1]) > 1e-3


def test_resume_with_backup_and_restore_continues_the_schedule(
    scheduled_run, train_data, initial_weights, tmp_path
):
    x, y = train_data
    stop_epoch = 5  # first epoch of stage 2, so the restart begins mid-stage
    assert STAGES[stop_epoch] == STAGES[stop_epoch + 1]

    probes = []

    def run(extra):
        model = quantized_model(initial_weights)
        probe = Probe(count_traces(model))
        probes.append(probe)
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        callbacks = [schedule(), backup, probe, *extra]
        with contextlib.redirect_stdout(io.StringIO()):
            history = model.fit(
                x, y, batch_size=BATCH, epochs=EPOCHS, callbacks=callbacks, verbose=0, shuffle=False
            )
        return model, probe, history

    with pytest.raises(RuntimeError, match="simulated interruption"):
        run([StopAfter(stop_epoch)])
    model, probe, history = run([])
    # Only the missing epochs ran, each at its stage; together they equal the full run's.
    assert history.epoch == list(range(stop_epoch + 1, EPOCHS))
    before = [probes[0].end[e]["stage"] for e in sorted(probes[0].end)]
    assert before + history.history[STAGE_LOG_KEY] == scheduled_run["history"][STAGE_LOG_KEY]
    assert probe.begin[stop_epoch + 1]["weight"] == {
        n: expected_weight_mode(n, STAGES[stop_epoch + 1]) for n in KERNELS
    }
    # Layers frozen before the interruption kept their restored kernels to the end.
    restored = probe.begin[stop_epoch + 1]["kernel"]
    for name in KERNELS[: STAGES[stop_epoch]]:
        assert np.array_equal(float_kernel(model.get_layer(name)).numpy(), restored[name])
    # The optimizer was built over every variable, as in the uninterrupted run.
    assert len(model.optimizer.variables) == len(scheduled_run["model"].optimizer.variables)


@pytest.mark.slow
def test_starting_in_a_frozen_stage_builds_the_optimizer_over_all_variables(
    scheduled_run, train_data, initial_weights
):
    """Slots are checkpointed by position: a run resumed (initial_epoch) with layers already
    frozen must build the same slots, in the same order, as the uninterrupted run."""
    x, y = train_data
    model = quantized_model(initial_weights)
    with (
        contextlib.redirect_stdout(io.StringIO()),
        pytest.warns(
            UserWarning, match="needs 10 epochs .* but fit runs 6: training ends in stage 2 of 4"
        ),
    ):
        model.fit(
            x, y, batch_size=BATCH, epochs=6, initial_epoch=5, callbacks=[schedule()], verbose=0
        )
    names = [v.name for v in model.optimizer.variables]
    assert names == [v.name for v in scheduled_run["model"].optimizer.variables]
    assert any("conv1/kernel" in name for name in names)


def test_optimizer_is_left_unpatched_after_fit(scheduled_run):
    optimizer = scheduled_run["model"].optimizer
    assert "apply_gradients" not in vars(optimizer)


# ---------------------------------------------------------------- planning and arguments


def test_plan_splits_layers_in_forward_order():
    model = uniq_tf.quantize_model(float_model())
    assert GradualQuantization("layer").plan(model) == [[n] for n in KERNELS]
    assert GradualQuantization(3).plan(model) == [["conv1", "conv2"], ["fc1"], ["fc2"]]
    assert GradualQuantization(2).plan(model) == [["conv1", "conv2"], ["fc1", "fc2"]]
    assert GradualQuantization(1).plan(model) == [KERNELS]
    explicit = [["fc2", "fc1"], ["conv1", "conv2"]]
    assert GradualQuantization(explicit).plan(model) == explicit


def test_plan_includes_nested_models():
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(
        inner_in, keras.layers.Conv2D(4, 3, name="inner_conv")(inner_in), name="backbone"
    )
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 1, name="stem")(inp)
    x = inner(x)
    out = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(x))
    model = uniq_tf.quantize_model(keras.Model(inp, out))
    assert GradualQuantization().plan(model) == [["stem"], ["inner_conv"], ["head"]]


def test_epoch_bookkeeping():
    model = uniq_tf.quantize_model(float_model())
    gq = GradualQuantization("layer", warmup_epochs=WARMUP, epochs_per_stage=PER_STAGE,
                             final_epochs=FINAL)
    with pytest.raises(RuntimeError, match="plan"):
        gq.stage_at(0)
    assert gq.total_epochs(model) == EPOCHS
    assert [gq.stage_at(e) for e in range(EPOCHS + 3)] == STAGES + [4, 4, 4]
    assert GradualQuantization(2, epochs_per_stage=3, final_epochs=0).stage_at(np.int64(5)) == 1
    assert GradualQuantization(2, epochs_per_stage=3, final_epochs=0).total_epochs(model) == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": "block"}, "stages must be"),
        ({"stages": 0}, "stages"),
        ({"stages": True}, "stages must be"),
        ({"stages": []}, "non-empty"),
        ({"stages": ["conv1", "conv2"]}, r"stages\[0\] must be a non-empty list"),
        ({"stages": [["conv1"], []]}, r"stages\[1\]"),
        ({"stages": [[1]]}, "layer names"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"epochs_per_stage": 0}, "epochs_per_stage"),
        ({"final_epochs": -2}, "final_epochs"),
        ({"final_epochs": 1.5}, "final_epochs"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualQuantization(**kwargs)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (5, r"stages=5 is more than the 4 quantized kernel layers"),
        ([["conv1", "nope"], ["conv2", "fc1", "fc2"]], r"\['nope'\].*not quantized kernel"),
        ([["conv1", "relu1"], ["conv2", "fc1", "fc2"]], r"\['relu1'\]"),
        ([["conv1", "conv2"], ["conv2", "fc1", "fc2"]], r"\['conv2'\] appear in more than one"),
        ([["conv1"], ["fc2"]], r"leave out .*\['conv2', 'fc1'\]"),
    ],
)
def test_bad_plans_raise(stages, message):
    model = uniq_tf.quantize_model(float_model())
    with pytest.raises(ValueError, match=message):
        GradualQuantization(stages).plan(model)


def test_unquantized_model_is_rejected():
    with pytest.raises(ValueError, match="quantize_model first"):
        GradualQuantization().plan(float_model())


def test_fractional_polish_epochs_split_an_epoch():
    model = uniq_tf.quantize_model(float_model())
    gq = GradualQuantization("layer", epochs_per_stage=3, polish_epochs=1.5)
    gq.plan(model)
    # Each 3-epoch stage: noisy, half noisy then hard from mid-epoch, hard.
    assert [gq.polishing_at(e) for e in range(3)] == [False, False, True]
    assert [gq.polish_start(e) for e in range(3)] == [None, 0.5, None]


def test_first_stage_length_and_polish_epochs_follow_the_formula():
    model = uniq_tf.quantize_model(float_model())
    gq = GradualQuantization("layer", warmup_epochs=1, epochs_per_stage=3, final_epochs=1,
                             first_stage_epochs=5, polish_epochs=1)
    # Written out by hand: warm-up, stage 0 for 5 epochs, stages 1-3 for 3 each, final.
    stages = [-1] + [0] * 5 + [1] * 3 + [2] * 3 + [3] * 3 + [4]
    polish = [False] + [False] * 4 + [True] + ([False] * 2 + [True]) * 3 + [False]
    assert gq.total_epochs(model) == len(stages)
    assert [gq.stage_at(e) for e in range(len(stages))] == stages
    assert [gq.polishing_at(e) for e in range(len(stages))] == polish


def test_polish_epochs_train_the_stage_hard_and_unfrozen(train_data):
    x, y = train_data
    model = quantized_model()

    class Probe(keras.callbacks.Callback):
        modes, kernels = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.modes.append(uniq_tf.weight_modes(self.model)["conv1"])
            self.kernels.append(float_kernel(kernel_wrappers(self.model)[0]).numpy().copy())

    probe = Probe()
    gq = GradualQuantization([["conv1"], ["conv2", "fc1", "fc2"]], epochs_per_stage=2,
                             polish_epochs=1, verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=4, verbose=0, callbacks=[gq, probe])
    assert probe.modes == [Mode.NOISY, Mode.QUANTIZED, Mode.QUANTIZED, Mode.QUANTIZED]
    # Polishing trains conv1 (epoch 1 changes it); once its stage ends it is frozen.
    assert not np.array_equal(probe.kernels[1], probe.kernels[2])
    assert np.array_equal(probe.kernels[2], probe.kernels[3])


def test_default_polishes_the_last_epoch_of_stages_of_two_or_more_epochs():
    model = uniq_tf.quantize_model(float_model())
    gq = GradualQuantization("layer", epochs_per_stage=2, first_stage_epochs=1, final_epochs=1)
    gq.plan(model)
    # Stage 0 has one epoch (nothing to polish), stages 1-3 two (the second polished).
    assert [gq.polishing_at(e) for e in range(8)] == [False] + [False, True] * 3 + [False]
    assert not any(GradualQuantization(2, epochs_per_stage=1).polishing_at(e) for e in range(3))
    paper = GradualQuantization("layer", epochs_per_stage=2, polish_epochs=0)
    paper.plan(model)
    assert not any(paper.polishing_at(e) for e in range(8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs_per_stage": 2, "polish_epochs": 2}, "polish_epochs"),
        ({"epochs_per_stage": 3, "first_stage_epochs": 1, "polish_epochs": 1}, "polish_epochs"),
        ({"first_stage_epochs": 0}, "first_stage_epochs"),
        ({"polish_epochs": -1}, "polish_epochs"),
        ({"polish_epochs": True}, "polish_epochs"),
        ({"epochs_per_stage": 2, "polish_epochs": 2.5}, "polish_epochs"),
    ],
)
def test_bad_schedule_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualQuantization(**kwargs)


@pytest.mark.slow
def test_fractional_polish_starts_inside_the_epoch(train_data):
    x, y = train_data  # 256 samples, batches of 64: 4 steps per epoch
    seen = {}

    class BatchProbe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.setdefault(self.epoch, []).append(uniq_tf.weight_modes(self.model)["conv1"])

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    # Half an epoch: from batch 2 of 4. The default leaves a one-epoch stage noisy.
    for polish, expected in ((0.5, [Mode.NOISY] * 2 + [Mode.QUANTIZED] * 2),
                             (0.25, [Mode.NOISY] * 3 + [Mode.QUANTIZED]),
                             (None, [Mode.NOISY] * 4), (0, [Mode.NOISY] * 4)):
        seen.clear()
        model = quantized_model()
        gq = GradualQuantization([["conv1"], ["conv2", "fc1", "fc2"]], epochs_per_stage=1,
                                 polish_epochs=polish, verbose=0)
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
                  callbacks=[gq, BatchProbe()])
        assert seen[0] == expected, polish
        assert seen[1] == [Mode.QUANTIZED] * 4  # conv1's stage is over: hard and frozen
