"""Atomic export output (:mod:`uniq_tf.atomic`) with the exporters' path checks and errors.

A failed export (converter error, failed verification, a crash) therefore never leaves a
partial file behind and never overwrites a good one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tflite_export.errors import ExportPathError
from uniq_tf.util.atomic import atomic_path


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
    """:func:`uniq_tf.util.atomic.atomic_path` after :func:`check_output_path`; a failed final
    rename raises ExportPathError."""
    path = check_output_path(path)
    renaming = False
    try:
        with atomic_path(path) as temp:
            yield temp
            renaming = True
    except OSError as error:
        if not renaming:
            raise
        raise ExportPathError(f"Cannot write {str(path)!r}: {error}") from error


def write_bytes(path: Path, data: bytes) -> None:
    """Writes a new file (the temporary file of :func:`atomic_output`)."""
    try:
        with open(path, "xb") as handle:
            handle.write(data)
    except OSError as error:
        raise ExportPathError(f"Cannot write {str(path)!r}: {error}") from error
