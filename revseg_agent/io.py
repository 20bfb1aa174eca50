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

from revseg_agent.errors import InputError

logger = logging.getLogger(__name__)

#: Written into every output folder revseg makes: what wrote it and which entries are its own.
#: `--overwrite` replaces only folders that carry it and hold nothing else, so a mistyped
#: `--out` (a home or project folder) is refused instead of deleted.
OUTPUT_MARKER = ".revseg-output.json"

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


class OutputFolderError(InputError):
    """An output path revseg must not write into or replace (a file, or a folder of other files)."""


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_output_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker, or None when it has none (or an unreadable one)."""
    try:
        marker = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("written_by") == "revseg-agent" else None


def write_output_marker(folder: Path, kind: str, entries: list[str] | None = None) -> None:
    """Mark `folder` as revseg's. `entries`: its own top-level names (a folder written in one
    piece); None: a folder revseg fills over time (eval, training), which is never replaced."""
    marker = {"written_by": "revseg-agent", "kind": kind, "entries": entries}
    atomic_write_text(folder / OUTPUT_MARKER, json.dumps(marker, indent=2) + "\n")


def _entries(folder: Path) -> list[str]:
    """A folder's top-level names, folders marked with a trailing `/`, sorted."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())


def foreign_entries(folder: Path) -> list[str]:
    """What in `folder` revseg did not write: everything without a marker, else what the marker
    does not list (a folder filled over time owns what it holds)."""
    names = _entries(folder)
    marker = read_output_marker(folder)
    if marker is None:
        return names
    own = marker.get("entries")
    if own is None:
        return []
    allowed = {OUTPUT_MARKER, *own}
    return [n for n in names if n.rstrip("/") not in allowed]


def check_replaceable(final: Path, *, overwrite: bool, option: str = "--overwrite") -> None:
    """Refuse (`OutputFolderError`, naming what is there) to write `final` unless it is absent,
    an empty folder, or, with `overwrite`, a folder revseg wrote that holds nothing else."""
    if not final.exists() and not final.is_symlink():
        return
    if not final.is_dir() or final.is_symlink():
        raise OutputFolderError(f"output path {final} exists and is not a folder: choose another path")
    names = sorted(p.name for p in final.iterdir())
    if not names:
        return
    if not overwrite:
        raise OutputFolderError(
            f"output folder {final} exists and is not empty (it holds {_listing(names)}): "
            f"pass {option} to replace an earlier revseg output, or choose another folder"
        )
    foreign = foreign_entries(final)
    if foreign:
        marked = read_output_marker(final) is not None
        why = "revseg did not write them" if marked else "it is not a revseg output folder"
        raise OutputFolderError(
            f"refusing to replace {final}: it holds {_listing(foreign)} ({why}; {option} replaces "
            f"only folders revseg wrote, marked by {OUTPUT_MARKER}): choose another folder"
        )


def _revseg_folder(path: Path, depth: int = 2) -> bool:
    """A folder revseg marked, or one holding nothing but such folders (`depth` levels down)."""
    if not path.is_dir() or path.is_symlink():
        return False
    if read_output_marker(path) is not None:
        return True
    children = list(path.iterdir())
    return depth > 0 and bool(children) and all(_revseg_folder(c, depth - 1) for c in children)


def claim_output_dir(folder: str | Path, kind: str, *, option: str = "--out") -> Path:
    """Make or reuse a folder that revseg fills over time (eval runs, training runs): refused when
    it is a file or a non-empty folder revseg did not make (one holding only folders revseg
    marked, such as a run's generated `data/`, is revseg's), so a resumed run never writes into
    (or prunes) a person's files; marked on first use."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir():
            raise OutputFolderError(f"{option} {folder} exists and is not a folder: choose another path")
        names = sorted(
            p.name + ("/" if p.is_dir() else "")
            for p in folder.iterdir()
            if not p.name.startswith(f".{OUTPUT_MARKER}.")  # another process writing the marker
            and not _revseg_folder(p)  # revseg's own, e.g. a run's generated data/
        )
        if names and read_output_marker(folder) is None:
            raise OutputFolderError(
                f"{option} {folder} is not empty and was not made by revseg (it holds "
                f"{_listing(names)}; no {OUTPUT_MARKER}): choose an empty or new folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    if read_output_marker(folder) is None:
        write_output_marker(folder, kind)
    return folder


@contextlib.contextmanager
def atomic_output_dir(
    final: str | Path, *, overwrite: bool = False, kind: str = "output", option: str = "--overwrite"
) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    On any exception the temporary folder is removed and `final` is left as it was. `final` is
    replaced only when `check_replaceable` allows it (checked before any work and again before
    the swap); the new folder carries the marker listing its entries.
    """
    final = Path(final)
    check_replaceable(final, overwrite=overwrite, option=option)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        write_output_marker(tmp, kind, sorted(p.name for p in tmp.iterdir()))
        check_replaceable(final, overwrite=overwrite, option=option)  # nothing added meanwhile
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
