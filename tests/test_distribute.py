"""UNIQ under tf.distribute: MirroredStrategy on 2 logical CPU devices, MultiWorkerMirroredStrategy
with 2 worker processes on localhost, and the TF_CONFIG checks of uniq-train.

Logical devices must be configured before TensorFlow initializes its devices, which the pytest
process has long done: the MirroredStrategy experiments run in a child process (this file run as
a script, ``python tests/test_distribute.py RESULTS.json``) that writes its measurements to a
JSON file, and the tests below assert on them.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from uniq_tf.cli import train
from uniq_tf.training import pipeline

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # multi-process runs: make test runs them, the fast subset does not

CHILD_TIMEOUT = 300
TINY_RUN = ["--float_epochs=1", "--stages=2", "--epochs_per_stage=1", "--final_epochs=1",
            "--max_steps_per_epoch=3", "--calibration_steps=2", "--batch_size=32"]


# ---------------------------------------------------------------- the child process


def _no_bn_model(keras):
    """conv-relu-conv-relu-pool-dense: no batch norm, whose per-replica batch statistics would
    differ from the global batch's under MirroredStrategy."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = layers.ReLU(name="relu1")(layers.Conv2D(8, 3, padding="same", name="conv1")(inputs))
    x = layers.ReLU(name="relu2")(layers.Conv2D(16, 3, padding="same", name="conv2")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(10, name="fc")(x))


def _same_training_on_1_and_2_replicas(strategy, x, y) -> dict:
    """SGD with momentum, global batch 32, noise off (conv1 and fc QUANTIZED, conv2 FLOAT;
    activations FLOAT, since their moving-average ranges follow per-replica batch min/max like
    batch norm), from the same weights, on one device and on two replicas."""
    import uniq_tf
    from uniq_tf._keras import keras, tf

    keras.utils.set_random_seed(1)
    initial = uniq_tf.quantize_model(_no_bn_model(keras), 4, 8).get_weights()
    trained = {}
    for name, where in (("single", tf.distribute.get_strategy()), ("mirrored", strategy)):
        with where.scope():
            model = uniq_tf.quantize_model(_no_bn_model(keras), 4, 8)
            model.set_weights(initial)
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED, ["conv1", "fc"])
        uniq_tf.set_weight_mode(model, uniq_tf.Mode.FLOAT, ["conv2"])
        uniq_tf.set_activation_mode(model, uniq_tf.ActMode.FLOAT)
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        trained[name] = model
    single, mirrored = (trained[k].trainable_weights for k in ("single", "mirrored"))
    books = [uniq_tf.get_codebooks(trained[k]) for k in ("single", "mirrored")]
    ranges = [uniq_tf.get_activation_ranges(trained[k]) for k in ("single", "mirrored")]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "max_trainable_difference": max(
            float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in
            zip(single, mirrored, strict=True)
        ),
        "max_trainable_change": max(  # initial is in the order of model.weights
            float(np.max(np.abs(v.numpy() - start)))
            for v, start in zip(trained["single"].weights, initial, strict=True) if v.trainable
        ),
        "replica_copies_identical": all(
            all(np.array_equal(v.values[0].numpy(), c.numpy()) for c in v.values)
            for v in trained["mirrored"].weights
        ),
        "codebook_indices_identical": all(
            np.array_equal(books[0][k].indices, books[1][k].indices) for k in books[0]
        ),
        "max_codebook_level_difference": max(
            float(np.max(np.abs(books[0][k].levels - books[1][k].levels))) for k in books[0]
        ),
        "max_activation_range_difference": max(
            abs(a - b) for k in ranges[0] for a, b in zip(ranges[0][k][:2], ranges[1][k][:2],
                                                          strict=True)
        ),
    }


def _noise_per_replica(strategy) -> dict:
    """A conv's weight quantizer called in replica context, NOISY and QUANTIZED."""
    import uniq_tf
    from uniq_tf import kquantile, models
    from uniq_tf._keras import keras, tf
    from uniq_tf.integration.inspection import float_kernel, kernel_wrappers, weight_quantizers

    keras.utils.set_random_seed(2)
    with strategy.scope():
        model = uniq_tf.quantize_model(models.small_cnn(), 4, 8)
    wrapper = kernel_wrappers(model)[1]  # conv2: 18,432 weights, enough to measure a correlation
    attr, quantizer, variables = weight_quantizers(wrapper)[0]
    kernel = float_kernel(wrapper, attr)

    @tf.function
    def forward():
        return strategy.run(lambda: quantizer(kernel, True, variables))

    def per_replica():
        return [t.numpy() for t in strategy.experimental_local_results(forward())]

    copies = [v.numpy() for v in kernel.values]
    books = [kquantile.codebook(c, quantizer.bits) for c in copies]
    noisy = per_replica()
    rows = tf.reshape(copies[0], [1, -1])
    stats = kquantile.fit(rows)
    # e = F(w_hat) - F(w), with F fitted on the (shared) kernel: the noise each replica drew.
    noise = [
        (kquantile.uniformize(tf.reshape(w_hat, [1, -1]), stats)
         - kquantile.uniformize(rows, stats)).numpy()
        for w_hat in noisy
    ]
    uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
    quantized = per_replica()
    half_width = 1 / (2 * 2**quantizer.bits)
    return {
        "kernel_copies_identical": bool(np.array_equal(copies[0], copies[1])),
        "codebooks_identical": bool(np.array_equal(books[0][0], books[1][0])
                                    and np.array_equal(books[0][1], books[1][1])),
        "noisy_differs": bool(not np.allclose(noisy[0], noisy[1])),
        "noise_correlation": float(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]),
        "max_noise_over_half_width": float(max(np.abs(e).max() for e in noise) / half_width),
        "quantized_identical": bool(np.array_equal(quantized[0], quantized[1])),
        "quantized_in_codebook": bool(np.isin(quantized[0], books[0][0]).all()),
    }


def _schedule_under_strategy(strategy, x, y) -> dict:
    """GradualQuantization (one layer per stage) under MirroredStrategy: per epoch, each
    replica's mode of every layer and whether its kernel changed; codebooks per replica."""
    import uniq_tf
    from uniq_tf import kquantile, models
    from uniq_tf._keras import keras
    from uniq_tf.integration.inspection import float_kernel, kernel_wrappers, weight_quantizers
    from uniq_tf.schedule.gradual import GradualQuantization

    keras.utils.set_random_seed(3)
    with strategy.scope():
        model = uniq_tf.quantize_model(models.small_cnn(), 4, 8)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    layers = {w.layer.name: w for w in kernel_wrappers(model)}

    def replica_values(variable):
        return [c.numpy() for c in variable.values]

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.before = {n: replica_values(float_kernel(w, "kernel")) for n, w in layers.items()}
            self.modes = {n: [int(m) for m in replica_values(weight_quantizers(w)[0][2]["mode"])]
                          for n, w in layers.items()}

        def on_epoch_end(self, epoch, logs=None):
            row = {}
            for name, wrapper in layers.items():
                after = replica_values(float_kernel(wrapper, "kernel"))
                row[name] = {
                    "modes": self.modes[name],
                    "changed": [not np.array_equal(a, b) for a, b in zip(after, self.before[name],
                                                                         strict=True)],
                    "replicas_equal": bool(np.array_equal(after[0], after[1])),
                }
            self.epochs.append(row)

    schedule = GradualQuantization("layer", epochs_per_stage=1, final_epochs=1, verbose=0)
    record = Record()
    model.fit(x, y, batch_size=32, epochs=schedule.total_epochs(model), shuffle=False,
              callbacks=[schedule, record], verbose=0)
    books = {
        name: [kquantile.codebook(c, 4)[0].tolist()
               for c in replica_values(float_kernel(w, "kernel"))]
        for name, w in layers.items()
    }
    return {"epochs": record.epochs, "codebooks": books, "stages": schedule.plan(model)}


def _calibration(strategy, x) -> dict:
    """calibrate_activations on the same batches: one device, two replicas (outside and inside
    the strategy's scope); every replica's copy of each range."""
    import uniq_tf
    from uniq_tf import models
    from uniq_tf._keras import keras, tf
    from uniq_tf.integration.inspection import output_quantizers, wrappers

    batches = tf.data.Dataset.from_tensor_slices(x).batch(64)
    keras.utils.set_random_seed(4)
    float_model = models.small_cnn()
    single = uniq_tf.quantize_model(float_model, 4, 8)
    reference = uniq_tf.calibrate_activations(single, batches, verbose=False)
    out = {"single": reference}
    for where in ("outside_scope", "inside_scope"):
        with strategy.scope():
            model = uniq_tf.quantize_model(float_model, 4, 8)
        if where == "inside_scope":
            with strategy.scope():
                uniq_tf.calibrate_activations(model, batches, verbose=False)
        else:
            uniq_tf.calibrate_activations(model, batches, verbose=False)
        out[where] = {
            w.layer.name: [[float(c.numpy()) for c in v[key].values] for key in ("min_var",
                                                                                 "max_var")]
            for w in wrappers(model) for _, v in output_quantizers(w)
        }
    return out


def _train_example(strategy, folder) -> dict:
    """uniq-train's run() with --strategy=mirrored (2 replicas here)."""
    cfg = train.TrainConfig(float_epochs=1, stages=2, epochs_per_stage=1, final_epochs=1,
                            max_steps_per_epoch=3, calibration_steps=2, batch_size=32,
                            strategy="mirrored", output_dir=folder, verbose=0)
    summary = train.run(cfg)
    return {"summary": summary, "files": sorted(os.listdir(folder))}


def _child(results_path: str) -> None:
    import uniq_tf  # noqa: F401  (sets up tf_keras before TensorFlow loads)
    from uniq_tf import data
    from uniq_tf._keras import tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    # train.py's own (one per process: a second MirroredStrategy's collectives would collide).
    strategy = train.make_strategy(train.TrainConfig(strategy="mirrored"))
    x, y, _, _ = data.load_digits()
    x, y = x[:256], y[:256]
    results = {
        "equality": _same_training_on_1_and_2_replicas(strategy, x, y),
        "noise": _noise_per_replica(strategy),
        "schedule": _schedule_under_strategy(strategy, x, y),
        "calibration": _calibration(strategy, x),
        "train_example": _train_example(strategy, os.path.join(os.path.dirname(results_path),
                                                                "mirrored_run")),
    }
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump(results, f)


# ---------------------------------------------------------------- tests on 2 logical CPUs


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    path = tmp_path_factory.mktemp("mirrored") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, __file__, str(path)], capture_output=True,
                            text=True, timeout=CHILD_TIMEOUT, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(path.read_text())


def test_mirrored_training_without_noise_equals_single_device(mirrored):
    eq = mirrored["equality"]
    assert eq["replicas"] == 2
    assert eq["max_trainable_change"] > 1e-2  # training did move the weights
    assert eq["max_trainable_difference"] < 1e-5
    assert eq["replica_copies_identical"]
    assert eq["codebook_indices_identical"] and eq["max_codebook_level_difference"] < 1e-5
    # The activation ranges' moving averages follow per-replica batch min/max (averaged over
    # replicas), as batch norm's statistics do: close to, not equal to, the global batch's.
    assert 0 < eq["max_activation_range_difference"] < 1e-2


def test_noise_is_drawn_per_replica_from_identical_statistics(mirrored):
    noise = mirrored["noise"]
    assert noise["kernel_copies_identical"] and noise["codebooks_identical"]
    assert noise["noisy_differs"]
    assert abs(noise["noise_correlation"]) < 0.05  # independent draws (18,432 of them)
    assert noise["max_noise_over_half_width"] <= 1 + 1e-3  # e ~ U[-1/2k, 1/2k] on each replica
    assert noise["quantized_identical"] and noise["quantized_in_codebook"]


def test_schedule_modes_and_freezing_reach_every_replica(mirrored):
    schedule = mirrored["schedule"]
    names = [stage[0] for stage in schedule["stages"]]
    assert len(schedule["epochs"]) == len(names) + 1
    for epoch, row in enumerate(schedule["epochs"]):
        for i, name in enumerate(names):
            expected = 2 if i < epoch else 1 if i == epoch else 0  # QUANTIZED, NOISY, FLOAT
            assert row[name]["modes"] == [expected, expected], (epoch, name)
            assert row[name]["changed"] == [i >= epoch] * 2, (epoch, name)  # frozen once passed
            assert row[name]["replicas_equal"], (epoch, name)
    for name, (first, second) in schedule["codebooks"].items():
        assert first == second, name


def test_calibration_under_a_strategy_matches_one_device(mirrored):
    calibration = mirrored["calibration"]
    for where in ("outside_scope", "inside_scope"):
        for name, (lo, hi) in calibration["single"].items():
            mins, maxs = calibration[where][name]
            assert mins == [pytest.approx(lo, abs=1e-6)] * 2, (where, name)
            assert maxs == [pytest.approx(hi, abs=1e-6)] * 2, (where, name)


def test_train_example_with_mirrored_strategy(mirrored):
    run = mirrored["train_example"]
    summary = run["summary"]
    assert summary["strategy"] == {"name": "mirrored", "replicas": 2}
    assert summary["uniq_stage_per_epoch"] == [0, 1, 2]
    assert run["files"] == sorted(summary["outputs"])  # no backup, no temporary files


# ---------------------------------------------------------------- two workers on localhost


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_in_step(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    out = tmp_path / "out"
    processes = []
    try:
        for index in range(2):
            env = {**os.environ, "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}})}
            log = open(tmp_path / f"worker{index}.log", "w")
            processes.append((subprocess.Popen(
                [sys.executable, "-m", "uniq_tf.cli.train", "--strategy=multi_worker",
                 *TINY_RUN, f"--output_dir={out}"],
                stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env), log))
        deadline = time.monotonic() + CHILD_TIMEOUT
        for process, _ in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for process, text in zip(processes, logs, strict=True):
        assert process[0].returncode == 0, text[-4000:]
    finals = [[line for line in text.splitlines() if "final stage" in line] for text in logs]
    assert finals[0] and finals[1]
    assert finals[0][-1].startswith("[worker 0 (chief)] final stage 2 of 2;")
    assert finals[1][-1].startswith("[worker 1] final stage 2 of 2;")
    digests = [line.split("sha256 ")[1] for line in (finals[0][-1], finals[1][-1])]
    assert digests[0] == digests[1]  # bit-identical quantized kernels on both workers

    # Only the chief's outputs remain: no worker temp folder, no backup.
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(os.listdir(out)) == sorted(summary["outputs"])
    assert summary["quantized_kernels_sha256"] == digests[0]
    assert summary["strategy"] == {"name": "multi_worker", "replicas": 2}
    assert summary["uniq_stage_per_epoch"] == [0, 1, 2]
    assert {row["name"] for row in summary["bops_layers"]} >= {"conv1", "conv2", "conv3", "fc"}


# ---------------------------------------------------------------- TF_CONFIG checks


def _cfg(tmp_path, **overrides):
    fields = dict(float_epochs=1, stages=2, epochs_per_stage=1, final_epochs=0,
                  strategy="multi_worker", output_dir=str(tmp_path / "out"), verbose=0)
    return train.TrainConfig(**{**fields, **overrides})


WORKERS = {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}
BAD_TF_CONFIGS = [
    (None, r"--strategy=multi_worker needs the TF_CONFIG environment variable"),
    ("{cluster: 1", r"TF_CONFIG is not valid JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), r'TF_CONFIG has no "cluster"'),
    (json.dumps({"cluster": WORKERS}), r'TF_CONFIG has no "task"'),
    (json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 2}}),
     r"TF_CONFIG task index 2 is out of range: the cluster has 2 'worker' task\(s\), "
     r"indices 0\.\.1"),
    (json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": -1}}),
     r"TF_CONFIG task index -1 is out of range"),
    (json.dumps({"cluster": WORKERS, "task": {"type": "chief", "index": 0}}),
     r"TF_CONFIG task type 'chief' is not in the cluster, whose task types are \['worker'\]"),
    (json.dumps({"cluster": {**WORKERS, "ps": ["127.0.0.1:20003"]},
                 "task": {"type": "worker", "index": 0}}),
     r"TF_CONFIG cluster has task types \['ps'\]; MultiWorkerMirroredStrategy allows"),
    (json.dumps({"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}),
     r"""TF_CONFIG cluster\["worker"\] has '127.0.0.1', which is not "host:port\""""),
    (json.dumps({"cluster": {"worker": "127.0.0.1:20001"},
                 "task": {"type": "worker", "index": 0}}),
     r'must be a non-empty list of "host:port"'),
    (json.dumps({"cluster": {"worker": ["127.0.0.1:20001"] * 2},
                 "task": {"type": "worker", "index": 0}}),
     r"lists \['127.0.0.1:20001'\] more than once"),
    (json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": "0"}}),
     r"TF_CONFIG task index must be an integer, got '0'"),
]


@pytest.mark.parametrize("tf_config, message", BAD_TF_CONFIGS)
def test_bad_tf_config_fails_before_training(tmp_path, monkeypatch, tf_config, message):
    def no_strategy(*args, **kwargs):
        raise AssertionError("the strategy was created before TF_CONFIG was checked")

    monkeypatch.setattr(pipeline, "make_strategy", no_strategy)
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError, match=message):
        train.run(cfg)
    assert not os.path.exists(cfg.output_dir)


def test_tf_config_without_multi_worker_strategy_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": WORKERS, "task": {"type": "worker", "index": 0}}))
    with pytest.warns(UserWarning, match=r"TF_CONFIG is set but --strategy=default: this "
                                         r"process trains alone"):
        train.validate_config(_cfg(tmp_path, strategy="default"))


def test_tf_config_with_a_chief_parses():
    cluster, task_type, index = train.parse_tf_config(json.dumps(
        {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
         "task": {"type": "worker", "index": 1}}))
    assert (cluster["worker"], task_type, index) == (["b:2", "c:3"], "worker", 1)


if __name__ == "__main__":
    _child(sys.argv[1])
