"""Atomic file output: write a temporary file next to the target, then ``os.replace`` onto it.

A failed write (an exception, a failed check inside the block) leaves no partial file and
keeps an older file as it was; ``os.replace`` within one directory is atomic on POSIX and
Windows. A killed process can leave its temporary file behind: its name matches
:data:`TEMP_NAME`, so the next run can find and remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# ".<name>.<pid>-<8 hex>.tmp<extension of name>", the names atomic_path hands out.
TEMP_NAME = re.compile(r"\..+\.\d+-[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary path in ``path``'s folder; if the block ends normally the
    temporary file replaces ``path``, otherwise it is removed and ``path`` is left as it was.

    The temporary name keeps ``path``'s extension, since writers such as Keras pick the file
    format by it. The folder must exist.
    """
    path = Path(path)
    temp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


def check_directory(path: str | os.PathLike, what: str = "output directory") -> Path:
    """``path`` as a Path if a directory can be (or is) there: NotADirectoryError, in one line,
    when it or a parent is a file, PermissionError when the nearest existing parent is not
    writable."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(
            f"Cannot use {what} {str(path)!r}: {str(existing)!r} is a file, not a directory.")
    if existing != path and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot create {what} {str(path)!r}: {str(existing)!r} is not writable.")
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def json_default(value):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as Python numbers and
    lists; anything else is still a TypeError."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(path: str | os.PathLike, obj, **dumps_kwargs) -> None:
    """Writes ``obj`` as indented JSON plus a final newline to ``path`` atomically;
    ``dumps_kwargs`` go to :func:`json.dumps` (e.g. ``default=json_default``)."""
    write_text(path, json.dumps(obj, indent=2, **dumps_kwargs) + "\n")
