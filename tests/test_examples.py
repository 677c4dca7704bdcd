"""examples/: the absl scripts run end to end on tfds.testing.mock_data at a tiny size (random
images, so only the plumbing is checked, not accuracy), and each lists its flags."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import uniq_tf

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")]


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cifar10_resnet20_trains_in_stages_and_exports_both_ways(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    script = example("cifar10_resnet20")
    with tfds.testing.mock_data(num_examples=16):
        result = script.run(str(tmp_path / "tfds"), str(tmp_path / "out"), image_size=16,
                            batch_size=8, float_epochs=1, stages=2, epochs_per_stage=1,
                            final_epochs=0, max_steps_per_epoch=2, export_samples=16)
    assert sorted(os.listdir(tmp_path / "out")) == ["finn_bundle", "float.tflite", "int8.tflite"]
    assert all(report.checked for report in result["tflite"].values())
    assert result["finn"]["check"]["status"] == "passed"
    assert len(result["finn"]["layers"]) == 22  # 19 convs, 2 option-A shortcuts, the classifier


def test_imagenet_resnet18_allocates_under_the_budget_and_fine_tunes(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    script = example("imagenet_resnet18")
    with tfds.testing.mock_data(num_examples=8):
        result = script.run(str(tmp_path / "tfds"), str(tmp_path / "out"), image_size=32,
                            batch_size=4, max_bops=0.08, epochs_per_stage=1, final_epochs=1,
                            max_steps_per_epoch=1)
    assert result["report"].total_bops <= result["budget"]
    books = uniq_tf.get_codebooks(result["quantized"])
    assert {name: book.bits for name, book in books.items()} == {
        name: w for name, (w, _) in result["plan"].items() if w is not None}
    assert len(books) == 21  # every conv and the classifier
    assert os.path.isfile(result["model"])


@pytest.mark.parametrize("name", ["cifar10_resnet20", "imagenet_resnet18"])
def test_the_scripts_list_their_flags(name):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--helpshort"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "--data_dir" in out.stdout and "--output_dir" in out.stdout
