"""uniq-train killed with SIGKILL, once in the float phase and once in the middle of a UNIQ
stage, then run again with the same command: it resumes at the epoch and stage where it
stopped and ends like an uninterrupted run, leaving no partial file.

The test watches the run's state under output_dir/backup (the per-epoch log and the
checkpoint that BackupAndRestore writes at each epoch end) and kills the process as soon as an
epoch of the phase has been backed up, so the kill lands in the next epoch (or its backup).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import uniq_tf
from uniq_tf import data
from uniq_tf._keras import keras
from uniq_tf.cli import train

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # multi-process runs: make test runs them, the fast subset does not

TIMEOUT = 240
# 3 float epochs; UNIQ: 2 stages of 2 epochs and 1 final epoch, so stages [0, 0, 1, 1, 2].
SETTINGS = dict(float_epochs=3, stages=2, epochs_per_stage=2, final_epochs=1,
                max_steps_per_epoch=3, calibration_steps=2, batch_size=32)
STAGES = [0, 0, 1, 1, 2]


def _epochs_logged(path: Path) -> int:
    try:
        return len(json.loads(path.read_text()).get("loss", []))
    except (OSError, ValueError):  # not written yet
        return 0


def _backed_up(backup: Path, phase: str) -> bool:
    """At least one epoch of ``phase`` is in its log and in a finished checkpoint."""
    return (_epochs_logged(backup / f"{phase}_history.json") >= 1
            and (backup / phase / "chief" / "checkpoint").exists())


def _run(command, log_path: Path, kill_when=None) -> tuple[bool, int, str]:
    """Runs ``command``; SIGKILLs it as soon as ``kill_when()`` holds. Returns (killed,
    return code, output)."""
    killed = False
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"})
        try:
            deadline = time.monotonic() + TIMEOUT
            while process.poll() is None and time.monotonic() < deadline:
                if kill_when is not None and kill_when():
                    os.kill(process.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.02)
            code = process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return killed, code, log_path.read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (in-process, no progress output) whose backups are left in place,
    as if the process had been killed right after training: (folder, summary, history)."""
    folder = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.Workspace, "finish", lambda self: None)
        summary = train.run(train.TrainConfig(**SETTINGS, output_dir=str(folder), verbose=0))
    return folder, summary, json.loads((folder / "history.json").read_text())


def test_restart_after_the_last_epoch_trains_nothing_and_writes_the_same_results(reference):
    folder, summary, history = reference
    assert (folder / "backup" / "uniq" / "chief" / "checkpoint").exists()
    again = train.run(train.TrainConfig(**SETTINGS, output_dir=str(folder), verbose=0))
    # The restored final state is the trained model: identical quantized kernels, accuracies
    # and best epoch; the epochs and stages come from the log of the first process.
    for key in ("quantized_kernels_sha256", "quantized_accuracy", "float_accuracy",
                "quantized_accuracy_before_uniq", "best", "uniq_stage_per_epoch", "epochs",
                "activation_ranges"):
        assert again[key] == summary[key], key
    assert json.loads((folder / "history.json").read_text()) == history
    assert sorted(os.listdir(folder)) == sorted(summary["outputs"])  # the backup is gone


def test_killed_run_resumes_where_it_stopped(tmp_path, reference):
    out = tmp_path / "out"
    backup = out / "backup"
    command = [sys.executable, "-m", "uniq_tf.cli.train",
               *(f"--{k}={v}" for k, v in SETTINGS.items()), f"--output_dir={out}"]

    # 1. Killed in the float phase, after its first epoch was backed up.
    killed, _, log = _run(command, tmp_path / "run1.log", lambda: _backed_up(backup, "float"))
    assert killed, log[-3000:]
    assert not (out / "float_model.h5").exists()

    # 2. Same command: resumes the float phase; killed in the first UNIQ stage, after the
    # stage's first epoch was backed up.
    killed, _, log = _run(command, tmp_path / "run2.log", lambda: _backed_up(backup, "uniq"))
    assert killed, log[-3000:]
    assert re.search(r"Float training: resuming at epoch [23]/3 ", log), log[-3000:]
    assert (out / "float_model.h5").exists()

    # The backup belongs to these settings: other settings are refused, before any training.
    with pytest.raises(ValueError, match=r"other settings \(weight_bits: 4 then, 2 now\)"):
        train.check_resumable(train.TrainConfig(**SETTINGS, weight_bits=2, output_dir=str(out)))
    train.check_resumable(train.TrainConfig(**SETTINGS, output_dir=str(out), verbose=0))

    # What a process killed while writing summary.json would leave (a temporary file).
    (out / f".summary.json.{os.getpid()}-0123abcd.tmp.json").write_text('{"model": "sm')

    # 3. Same command: runs to the end.
    killed, code, log = _run(command, tmp_path / "run3.log")
    assert not killed and code == 0, log[-3000:]
    assert "Float training was finished before the restart" in log
    resumed = int(re.search(r"UNIQ: resuming at epoch (\d)/5 ", log).group(1))
    assert resumed >= 2  # not from the start
    # The first stage it announces is the stage of the epoch it resumed at.
    first_stage = re.search(r"GradualQuantization, epoch (\d+): (.*)", log)
    assert int(first_stage.group(1)) == resumed
    assert first_stage.group(2).startswith(
        f"stage {STAGES[resumed - 1] + 1}/2" if STAGES[resumed - 1] < 2 else "all 2 stages")
    assert re.search(r"Layer +Type +Output shape +Params +W bits", log)  # the BOPs table

    # The same as an uninterrupted run of the same settings.
    _, reference_summary, reference_history = reference
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uniq_stage_per_epoch"] == reference_summary["uniq_stage_per_epoch"] == STAGES
    assert summary["epochs"] == reference_summary["epochs"]
    history = json.loads((out / "history.json").read_text())
    for phase, epochs in (("float", 3), ("uniq", 5)):
        lengths = {key: len(values) for key, values in history[phase].items()}
        assert lengths == {key: len(v) for key, v in reference_history[phase].items()}
        assert set(lengths.values()) == {epochs}, (phase, lengths)
    # The best model competes among the epochs from the last stage on (stage 1: epochs 3-5).
    val_accuracy = history["uniq"]["val_accuracy"]
    assert summary["best"]["val_accuracy"] == max(val_accuracy[2:])
    assert val_accuracy[summary["best"]["epoch"] - 1] == summary["best"]["val_accuracy"]
    assert summary["best"]["epoch"] >= 3

    # Nothing partial or left over: exactly the outputs, each complete.
    assert sorted(os.listdir(out)) == sorted(summary["outputs"])
    assert sorted(summary["outputs"]) == sorted(reference_summary["outputs"])
    for name in ("history.json", "summary.json"):
        json.loads((out / name).read_text())
    assert (out / "bops.txt").read_text().startswith("BOPs summary of 'small_cnn'")
    _, _, x_test, y_test = data.load_digits()
    with uniq_tf.quantize_scope():
        quantized = keras.models.load_model(out / "quantized_model.h5", compile=False)
        best = keras.models.load_model(out / "best_quantized_model.h5", compile=False)
    accuracy = np.mean(np.argmax(quantized.predict(x_test, verbose=0), axis=1) == y_test)
    assert accuracy == pytest.approx(summary["quantized_accuracy"], abs=1e-6)
    assert set(uniq_tf.weight_modes(best).values()) == {uniq_tf.Mode.QUANTIZED}
    assert set(uniq_tf.activation_modes(best).values()) == {uniq_tf.ActMode.QUANTIZED}
    accuracy = np.mean(np.argmax(best.predict(x_test, verbose=0), axis=1) == y_test)
    assert accuracy == pytest.approx(summary["best"]["val_accuracy"], abs=1e-6)
    keras.models.load_model(out / "float_model.h5", compile=False)
