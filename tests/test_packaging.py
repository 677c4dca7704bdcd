"""The package as a user installs it: PEP 621 metadata, a fresh virtual environment, its
console commands and a one-epoch ``uniq-train`` on digits, all without network (the fresh
environment sees the tested stack of this .venv through a .pth file; pip installs with
``--no-index``, so a requirement the stack does not satisfy fails the test)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

import uniq_tf

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("uniq-train", "uniq-export-tflite", "uniq-export-finn", "uniq-bops")


def test_metadata_has_one_version_ranges_and_the_commands():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dynamic"] == ["version"] and "version" not in project
    # setup.py is there for tools that look for one, and only calls setup(): the metadata
    # lives in pyproject.toml alone.
    setup_code = [line for line in (ROOT / "setup.py").read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith(("#", '"""'))]
    assert setup_code == ["from setuptools import setup", "setup()"], setup_code
    assert "Apache" in (ROOT / "LICENSE").read_text()[:400]
    assert sorted(project["scripts"]) == sorted(COMMANDS)
    assert not [r for r in project["dependencies"] if "==" in r]  # ranges, not pins
    assert {"data", "tflite", "fpga", "dev"} <= set(project["optional-dependencies"])
    assert not any("tf2onnx" in r for extra in project["optional-dependencies"].values()
                   for r in extra)
    pinned = (ROOT / "requirements.txt").read_text()
    assert "tensorflow==" in pinned and "tf-keras==" in pinned  # the tested pair, for make


def _run(command, cwd, timeout=600, codes=(0,)):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode in codes, (command, result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.mark.slow
def test_pip_install_in_a_fresh_venv_then_the_commands_run(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for package in ("uniq_tf", "tflite_export", "fpga_export"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "env"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(env_dir)],
         tmp_path)
    python = env_dir / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                tmp_path).stdout.strip()
    Path(site, "tested_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    install = _run([str(python), "-m", "pip", "install", "--no-index", "--no-build-isolation",
                    f"{source}[data,tflite,fpga]"], tmp_path)
    assert "Successfully installed uniq-tf" in install.stdout
    where = _run([str(python), "-c", "import uniq_tf, tflite_export, fpga_export; "
                  "print(uniq_tf.__file__, uniq_tf.__version__)"], tmp_path).stdout
    assert where.split() == [str(Path(site, "uniq_tf", "__init__.py")), uniq_tf.__version__]

    for command in COMMANDS:
        # absl's help flags print to stdout and exit with status 1.
        short = _run([str(env_dir / "bin" / command), "--helpshort"], tmp_path, codes=(1,)).stdout
        assert short.count("\n  --") >= 4, (command, short)  # its own flags, not absl's only
        if command.startswith("uniq-export"):  # the shared flags are listed too
            assert all(flag in short for flag in ("--dataset", "--input_range", "--[no]check")), (
                command, short)
    out = tmp_path / "run"
    _run([str(env_dir / "bin" / "uniq-train"), "--float_epochs=1", "--stages=1",
          "--epochs_per_stage=1", "--final_epochs=0", "--max_steps_per_epoch=4",
          "--calibration_steps=1", "--verbose=0", f"--output_dir={out}"], tmp_path)
    assert {"float_model.h5", "quantized_model.h5", "summary.json", "bops.txt"} <= {
        p.name for p in out.iterdir()}


def _python(code: str, **env) -> str:
    base = {k: v for k, v in os.environ.items()
            if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    base.update(CUDA_VISIBLE_DEVICES="", **env)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1] + "\n" + result.stderr


def test_environment_variables_are_set_only_when_unset():
    show = ("import os, uniq_tf; m = uniq_tf.keras.Sequential([uniq_tf.keras.Input((3,)), "
            "uniq_tf.keras.layers.Dense(2)]); q = uniq_tf.quantize_model(m, 4, 8); "
            "print(os.environ['TF_USE_LEGACY_KERAS'], os.environ['TF_CPP_MIN_LOG_LEVEL'], "
            "uniq_tf.is_quantized_model(q))")
    assert _python(show).startswith("1 2 True")
    # A user's choice survives (TFMOT overwrites TF_USE_LEGACY_KERAS while it loads), and
    # uniq_tf still works: it uses tf_keras whatever tf.keras is.
    assert _python(show, TF_USE_LEGACY_KERAS="0", TF_CPP_MIN_LOG_LEVEL="1").startswith(
        "0 1 True")


def test_keras3_imported_first_is_named_at_import():
    out = _python("import keras, tensorflow as tf; tf.keras.Sequential; import uniq_tf; "
                  "print(uniq_tf.keras.__name__)")
    assert out.startswith("tf_keras")
    assert "imported with Keras 3 active before uniq_tf" in out


def test_submodules_are_attributes_and_the_heavy_ones_load_lazily():
    out = _python("import sys, uniq_tf; lazy = [m for m in ('uniq_tf.training', 'uniq_tf.cli', "
                  "'uniq_tf.cost.visualize') if m in sys.modules]; "
                  "print(lazy, uniq_tf.keras.__name__, uniq_tf.training.__name__, "
                  "callable(uniq_tf.visualize.plot_weight_histograms), "
                  "uniq_tf.saving.load_quantized.__name__)")
    assert out.startswith("[] tf_keras uniq_tf.training True load_quantized")
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        uniq_tf.nonexistent  # noqa: B018


# Every name uniq_tf exposed before its modules were grouped into sub-packages.
EARLIER_NAMES = (
    "ActMode", "AllocationReport", "Codebook", "GradualQuantization", "KQuantileWeightQuantizer",
    "LayerBits", "Mode", "SwitchableActivationQuantizer", "UniqScheme", "activation_modes",
    "allocate_bits", "calibrate_activations", "get_activation_ranges", "get_codebooks",
    "is_quantized_model", "keras", "plot_plan", "plot_tradeoff", "register_layer",
    "quantize_annotate_layer", "quantize_annotate_model", "quantize_apply", "quantize_model",
    "quantize_scope", "set_activation_mode", "set_grid_bits", "set_weight_mode",
    "strip_quantization", "summary", "unregister_layer", "weight_modes",
)
EARLIER_MODULE_NAMES = {
    "models": "small_cnn", "data": "load_digits", "visualize": "plot_weight_histograms",
    "saving": "load_quantized", "callbacks": "GradualQuantization", "bops": "summary",
    "allocate": "allocate_bits", "kquantile": "quantize", "quantizers": "KQuantileWeightQuantizer",
    "registry": "register_layer", "annotate": "quantize_annotate_layer",
    "modes": "set_weight_mode", "inputs": "batches", "atomic": "write_json",
    "plots": "plot_tradeoff", "internals": "wrapper_weight_vars",
}


def test_every_earlier_public_name_is_still_where_it_was():
    import uniq_tf

    assert all(hasattr(uniq_tf, name) for name in EARLIER_NAMES)
    assert set(EARLIER_NAMES) <= set(uniq_tf.__all__)
    for module, name in EARLIER_MODULE_NAMES.items():
        assert callable(getattr(getattr(uniq_tf, module), name)), (module, name)
