"""Atomic file and folder writes, and file-name sanitising.

Why: an interrupted run must never leave a half-written file or output folder behind. Files are
written to a temporary sibling and renamed into place (atomic on POSIX); output folders are
assembled in a temporary sibling folder and renamed in one step.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def safe_name(identifier: str, *, max_length: int = 120) -> str:
    """A file-name-safe version of an id: no separators, no `..`, never empty."""
    cleaned = _UNSAFE.sub("_", identifier).strip("._") or "_"
    return cleaned[:max_length]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_output_dir(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    On any exception the temporary folder is removed and `final` is left as it was.
    """
    final = Path(final)
    if final.exists() and not overwrite and any(final.iterdir()):
        raise FileExistsError(f"output folder {final} exists and is not empty (pass overwrite)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        backup = final.with_name(f".{final.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        final.rename(backup)
        tmp.rename(final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        tmp.rename(final)
