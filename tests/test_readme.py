"""The README's python blocks run, in order, in one namespace, on the bundled digits: the
quick-start code cannot rot. Each block's results are checked, not only that it ran."""

import enum
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import uniq_tf

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def test_the_readme_has_the_blocks_this_test_checks():
    blocks = python_blocks()
    assert len(blocks) >= 8
    assert "uniq_tf._keras" not in README.read_text(encoding="utf-8")  # public names only


@pytest.mark.slow
def test_readme_code_runs_on_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    try:
        for number, block in enumerate(python_blocks(), start=1):
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
    finally:
        if "Scale" in namespace:
            uniq_tf.unregister_layer(namespace["Scale"])
    ns = namespace
    out = capsys.readouterr().out
    x_test, y_test = ns["x_test"], ns["y_test"]
    # The example's model is a working 4-bit model, and stripping keeps its codebooks.
    accuracy = np.mean(ns["deployable"].predict(x_test, verbose=0).argmax(1) == y_test)
    assert accuracy > 0.9, accuracy
    assert {name: book.bits for name, book in ns["codebooks"].items()} == {
        "conv1": 4, "conv2": 4, "conv3": 4, "fc": 4}
    assert "UNIQ W4A8 test accuracy:" in out
    np.testing.assert_array_equal(ns["restored"].predict(x_test[:16], verbose=0),
                                  ns["q"].predict(x_test[:16], verbose=0))
    # One settings object: its fields reach every quantizer, a keyword overrides one of them.
    assert {b.bits for b in uniq_tf.get_codebooks(ns["two_bit"]).values()} == {2}
    assert {b.bits for b in uniq_tf.get_codebooks(ns["three_bit"]).values()} == {3}
    assert all(b.channel_axes for b in uniq_tf.get_codebooks(ns["three_bit"]).values())
    # Annotating two layers at 2 bits quantizes exactly those.
    assert {n: b.bits for n, b in uniq_tf.get_codebooks(ns["partial"]).items()} == {
        "conv2": 2, "conv3": 2}
    assert "['fc', 'scale']" in out
    assert len(ns["paths"]) == 4 and all(Path(p).stat().st_size > 0 for p in ns["paths"])
    assert ns["report"].samples_checked == len(x_test)
    assert uniq_tf.summary(ns["mixed"]).total_bops <= ns["budget"]
    for name in ("m_float.tflite", "m_int8.tflite", "m.uniq", "quantized_model.h5"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "finn_bundle" / "model.onnx").is_file()
    np.testing.assert_array_equal(ns["unpacked"].predict(x_test[:16], verbose=0),
                                  ns["deployable"].predict(x_test[:16], verbose=0))


def test_the_quickstart_example_is_the_readmes_first_block():
    script = (README.parent / "examples" / "quickstart.py").read_text(encoding="utf-8")
    assert python_blocks()[0] in script


def _default(value) -> str:
    return f"{type(value).__name__}.{value.name}" if isinstance(value, enum.Enum) else repr(value)


def _signature(obj) -> str:
    """``inspect.signature`` written as the README's Signatures block writes it."""
    parts, starred = [], False
    for p in inspect.signature(obj).parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            parts.append("*" + p.name)
            starred = True
            continue
        if p.kind == p.VAR_KEYWORD:
            parts.append("**" + p.name)
            continue
        if p.kind == p.KEYWORD_ONLY and not starred:
            parts.append("*")
            starred = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={_default(p.default)}")
    return ", ".join(parts)


def test_the_readme_signatures_are_the_codes():
    import importlib

    block = re.search(r"^## Signatures\n.*?^```text\n(.*?)^```", README.read_text(encoding="utf-8"),
                      re.M | re.S)
    assert block, "README has no Signatures block"
    lines = block.group(1).strip().splitlines()
    assert len(lines) >= 10
    for line in lines:
        name, args = re.fullmatch(r"([\w.]+)\((.*)\)", line).groups()
        module, attribute = name.rsplit(".", 1)
        obj = getattr(importlib.import_module(module), attribute)
        assert args == _signature(obj), f"README's {name} differs from the code"
