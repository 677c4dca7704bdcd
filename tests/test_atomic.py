"""uniq_tf.atomic: a failed write keeps the old file and leaves no temporary file."""

import json
import os

import numpy as np
import pytest

from uniq_tf import atomic


def test_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    atomic.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert path.read_text().endswith("\n")
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "out.json"]


def test_json_default_writes_numpy_values_and_rejects_other_objects(tmp_path):
    path = tmp_path / "n.json"
    obj = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3, dtype=np.int32)}
    atomic.write_json(path, obj, default=atomic.json_default)
    assert json.loads(path.read_text()) == {"i": 3, "f": 0.5, "a": [0, 1, 2]}
    path.write_text("good")
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        atomic.write_json(path, {"x": object()}, default=atomic.json_default)
    assert path.read_text() == "good"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.h5"
    path.write_text("good")
    with pytest.raises(RuntimeError, match="boom"), atomic.atomic_path(path) as temp:
        temp.write_text("partial")
        assert temp.parent == path.parent and temp.suffix == ".h5"
        assert atomic.TEMP_NAME.fullmatch(temp.name)
        raise RuntimeError("boom")
    assert path.read_text() == "good"
    assert os.listdir(tmp_path) == ["model.h5"]


def test_temporary_names_differ_and_match_temp_name(tmp_path):
    with atomic.atomic_path(tmp_path / "a.txt") as first, \
            atomic.atomic_path(tmp_path / "a.txt") as second:
        first.write_text("1")
        second.write_text("2")
        assert first != second
    assert (tmp_path / "a.txt").read_text() == "1"  # the outer block ends last
    assert not atomic.TEMP_NAME.fullmatch("a.txt")
