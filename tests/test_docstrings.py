"""Every public function documents its arguments, what it returns and what it raises, in the
Larq manner (Args: / Returns: / Raises:), and no docstring points outside the repository."""

import dataclasses
import enum
import inspect
import re
from pathlib import Path

import pytest

import fpga_export
import tflite_export
import uniq_tf
from uniq_tf import data, saving, visualize

ROOT = Path(__file__).resolve().parents[1]
EXTRA = [data.get_dataset, data.load_digits, saving.load_quantized, saving.save_quantized,
         visualize.plot_weight_histograms]


def public_objects():
    for module in (uniq_tf, tflite_export, fpga_export):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj
    for obj in EXTRA:
        yield f"{obj.__module__}.{obj.__name__}", obj


def _parameters(obj) -> list[str]:
    return [p.name for p in inspect.signature(obj).parameters.values()
            if p.name not in ("self", "cls")]


def _raises(function) -> bool:
    """True when the function's own body (not the docstring) raises."""
    source = inspect.getsource(function)
    body = source.split('"""', 2)[-1] if source.count('"""') >= 2 else source
    return re.search(r"^\s+raise \w", body, re.M) is not None


@pytest.mark.parametrize("name, obj", list(public_objects()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_public_api_is_documented_in_the_larq_manner(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj) or issubclass(obj, (enum.Enum, BaseException)):
            return  # fields, members and messages are documented where they are declared
        init_doc = inspect.getdoc(obj.__init__) or ""
        if _parameters(obj):
            assert "Args:" in doc or "Args:" in init_doc, f"{name}: no Args"
        return
    if _parameters(obj):
        assert "Args:" in doc, f"{name}: no Args"
    returns = inspect.signature(obj).return_annotation
    if returns not in (None, "None"):
        assert "Returns:" in doc, f"{name}: no Returns"
    if _raises(obj):
        assert "Raises:" in doc, f"{name} raises but documents no Raises"


def test_no_source_points_outside_the_repository():
    offenders = []
    for package in ("uniq_tf", "tflite_export", "fpga_export", "examples", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "../shared" in text or "uniq-method.md" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders
