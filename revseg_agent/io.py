"""Atomic file and folder writes, and file-name sanitising.

Why: an interrupted run must never leave a half-written file or output folder behind. Files are
written to a temporary sibling and renamed into place (atomic on POSIX); output folders are
assembled in a temporary sibling folder and renamed in one step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

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


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: after this returns, the record survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Every complete JSON line. A torn line (a process killed mid-append) is skipped, and with
    `repair` the file is rewritten without it so later appends start on a clean line."""
    path = Path(path)
    if not path.is_file():
        return []
    raw = path.read_text(encoding="utf-8")
    good: list[str] = []
    records: list[dict[str, Any]] = []
    for line in raw.splitlines(keepends=True):
        if not line.endswith("\n"):
            logger.warning("dropping a torn last line in %s", path)
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("dropping a corrupt line in %s", path)
            continue
        good.append(line)
    if repair and "".join(good) != raw:
        atomic_write_text(path, "".join(good))
    return records
