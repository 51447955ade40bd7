"""Small shared helpers: run environment for result JSON, atomic writes, and output-directory locks.

Everything alignx writes goes to a temporary sibling first and is renamed into place (a rename within one
directory is atomic), so a killed or failing run never leaves a half-written file or directory behind:
- files (result JSON, configs, reports): :func:`atomic_write_text` / :func:`write_json`;
- directories (checkpoints, ``final/``): :func:`atomic_dir`, or :func:`staging_path` + :func:`commit_dir`
  when several processes fill the directory.
Temporary siblings are named ``.tmp-<name>...``; the owner of a directory removes stale ones
(:func:`remove_stale`). A run owns its output directory while it writes: :func:`output_lock`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import shutil
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("alignx", "torch", "transformers", "accelerate", "peft", "lm-eval", "sacrebleu")
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
LOCK_NAME = ".alignx.lock"


def environment() -> dict[str, Any]:
    """Versions, device and time, stored in every result JSON so figures can be traced."""
    import torch

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "versions": versions,
    }


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems refuse to fsync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary sibling, fsync it and rename it over ``path``: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically so a crash never leaves a half-written result."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def staging_path(dest: str | Path) -> Path:
    """The temporary sibling a directory is built in before :func:`commit_dir` renames it to ``dest``.

    The name is fixed (not per process), so every rank of a multi-process run writes into the same one;
    the run's lock on the parent directory keeps other runs away from it."""
    dest = Path(dest)
    return dest.with_name(f"{TMP_PREFIX}{dest.name}")


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit_dir(staging: str | Path, dest: str | Path) -> Path:
    """Rename a finished ``staging`` directory to ``dest``, replacing an older ``dest``.

    Two renames (POSIX cannot rename over a non-empty directory): the old ``dest`` goes aside to
    ``.old-<name>`` first, so at every instant ``dest`` is either the complete old or the complete new one,
    or absent; never partial."""
    staging, dest = Path(staging), Path(dest)
    if dest.exists():
        old = dest.with_name(f"{OLD_PREFIX}{dest.name}")
        remove_path(old)
        os.rename(dest, old)
        os.rename(staging, dest)
        remove_path(old)
    else:
        os.rename(staging, dest)
    _fsync_dir(dest.parent)
    return dest


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Build a directory in its staging sibling and rename it to ``dest`` when the block succeeds;
    on an error the staging directory is removed and ``dest`` is left as it was."""
    staging = staging_path(dest)
    remove_path(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_dir(staging, dest)


def remove_stale(directory: str | Path) -> list[str]:
    """Delete temporary siblings (``.tmp-*``, ``.old-*``) that killed runs left in ``directory``.

    Call it only while holding the directory's :func:`output_lock`: then no live writer owns them."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith((TMP_PREFIX, OLD_PREFIX)):
                remove_path(entry)
                removed.append(entry.name)
    return removed


# --------------------------------------------------------------------------------------------
# Output directory locks
# --------------------------------------------------------------------------------------------


class OutputDirBusy(RuntimeError):
    """Another alignx run holds the output directory's lock."""


class TrainingDiverged(RuntimeError):
    """Training stopped after too many optimiser steps in a row with a non-finite loss term or gradient."""


# Errors of the machine rather than of alignx (disk full, read-only, no permission): the CLI reports them
# as one line naming the path.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

_held: dict[str, list[Any]] = {}  # real path -> [fd, depth]: the locks this process holds (re-entrant)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        return f"alignx {info['command']}, pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def output_lock(path: str | Path, command: str, enabled: bool | None = None) -> Iterator[Path]:
    """Own ``path`` for the duration of the block: a second run that asks for it fails at once.

    The lock is ``<path>/.alignx.lock`` held with ``flock``, so the kernel releases it when the process
    dies (kill -9 included): there are no stale locks to clean by hand. Re-entrant within one process.
    Directories the lock created are removed again when the block leaves them empty (a run refused
    after the lock leaves nothing behind). ``enabled=False`` (non-main ranks of one run) skips it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        from alignx.config import ConfigError

        raise ConfigError(f"output_dir {path} is a file, not a directory; choose another output_dir")
    if enabled is None:
        enabled = _is_main_process()
    if not enabled:
        yield path
        return
    created = []  # directories this call creates, innermost first
    probe = path.absolute()
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    key = os.path.realpath(path) if path.exists() else str(path.absolute())
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    lock = path / LOCK_NAME
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, path)
    except BaseException:
        _remove_empty(created)
        raise
    since = datetime.now(UTC).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode())
    key = os.path.realpath(path)
    _held[key] = [fd, 1]
    try:
        yield path
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        _remove_empty(created)


def _acquire(lock: Path, path: Path) -> int:
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputDirBusy(
                f"{path} is in use by another run ({_holder(lock)}): wait for it to finish or choose another output_dir"
            ) from None
        # The previous holder unlinks the file when it finishes: make sure we locked the file that is there now.
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_empty(created: list[Path]) -> None:
    """Remove the directories a lock created (innermost first) while they are empty."""
    for d in created:
        try:
            d.rmdir()
        except OSError:
            break


def setup_logging() -> None:
    """alignx's log format and level (``ALIGNX_LOG``, default INFO): the CLI's, and a spawned worker process's."""
    logging.basicConfig(level=os.environ.get("ALIGNX_LOG", "INFO"), format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
