"""Atomic output: write next to the target, check, then ``os.replace`` onto it.

A failed export (converter error, failed verification, a crash) therefore never leaves a
partial file behind and never overwrites a good one: ``os.replace`` within one directory is
atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from tflite_export.errors import ExportPathError


def check_output_path(path: str | os.PathLike) -> Path:
    """Returns ``path`` as a Path if a file can be written there, else raises ExportPathError."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise ExportPathError(
            f"Output path {str(path)!r} is a directory; give a file name inside it, "
            f"e.g. {str(path / 'model.tflite')!r}."
        )
    if not parent.is_dir():
        raise ExportPathError(
            f"Cannot write {str(path)!r}: directory {str(parent)!r} does not exist."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportPathError(
            f"Cannot write {str(path)!r}: directory {str(parent)!r} is not writable."
        )
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary path in ``path``'s directory; if the block ends normally the
    temporary file replaces ``path``, otherwise it is deleted and ``path`` is left as it was.
    """
    path = check_output_path(path)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield temp
        try:
            os.replace(temp, path)
        except OSError as error:
            raise ExportPathError(f"Cannot write {str(path)!r}: {error}") from error
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Writes a new file (the temporary file of :func:`atomic_output`)."""
    try:
        with open(path, "xb") as handle:
            handle.write(data)
    except OSError as error:
        raise ExportPathError(f"Cannot write {str(path)!r}: {error}") from error
