"""One writer per run directory: an exclusive ``flock`` on ``DIR/.edgeflow.lock`` for the writer's
lifetime.

The lock is the kernel's, on an open file: a process that ends in any way (a kill included) drops
it, so a lock file left behind is never stale — the next writer simply takes it. The file holds the
holder's process id and what it is doing, which is how a second writer names it. Readers (``plot``,
``ef.load``) never take the lock. Locks are counted per directory within a process, so a run that
holds its directory can call code that takes the same lock again (the CLI holds it across the run
and its summary; ``compare`` takes it too).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeflow.errors import ConfigError

LOCK_FILE = ".edgeflow.lock"


class DirectoryBusy(ConfigError):
    """Another process writes the run (or sweep) directory."""


#: directories this process holds: real path → [file descriptor, nesting depth, created the directory]
_held: dict[str, list] = {}


def _key(directory: Path) -> str:
    return os.path.realpath(directory)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not yet written its id"


def _busy(directory: Path, fd: int) -> DirectoryBusy:
    return DirectoryBusy(
        f"{directory} is in use by another edgeflow process ({_holder(fd)}); "
        "wait for it to end, or stop it, before writing there"
    )


def unwritable(path: Path, err: OSError) -> ConfigError:
    """``path`` cannot be written: one line with the cause (read-only, full disk, no permission)."""
    return ConfigError(f"cannot write {path}: {err.strerror or err}")


def acquire(directory: str | os.PathLike, doing: str, create: bool = False) -> None:
    """Hold ``directory`` exclusively (created first with ``create``; then removed again at
    ``release`` if it is still empty). Raises ``DirectoryBusy`` naming the holder, changing nothing."""
    directory = Path(directory)
    created = False
    if create and not directory.exists():
        try:
            directory.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
        except OSError as err:
            raise unwritable(directory, err) from None
    key = _key(directory)
    if key in _held:
        _held[key][1] += 1
        return
    path = directory / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if created:
                directory.rmdir()
            raise unwritable(directory, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = _busy(directory, fd)
            os.close(fd)
            raise busy from None
        # A holder that was releasing may have removed the file between our open and our lock:
        # then we hold a lock on a file nobody else can find, and must take the one at the path.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stamp = f"pid {os.getpid()}, {doing}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode(), 0)
    except OSError as err:  # a full disk: the lock holds without the note
        if err.errno != errno.ENOSPC:
            raise
    _held[key] = [fd, 1, created]


def release(directory: str | os.PathLike) -> None:
    directory = Path(directory)
    key = _key(directory)
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1]:
        return
    del _held[key]
    fd, _, created = entry
    try:
        (directory / LOCK_FILE).unlink()  # while still held, so no one takes a lock on it meanwhile
    except OSError:
        pass  # a read-only directory: the file stays, unlocked, harmless
    os.close(fd)
    if created:
        try:
            directory.rmdir()  # a run that stopped before writing anything leaves no directory
        except OSError:
            pass


@contextmanager
def holding(directory: str | os.PathLike, doing: str, create: bool = False) -> Iterator[None]:
    acquire(directory, doing, create)
    try:
        yield
    finally:
        release(directory)


def check_free(directory: str | os.PathLike) -> None:
    """Raise ``DirectoryBusy`` if another process holds ``directory``; changes nothing."""
    directory = Path(directory)
    if _key(directory) in _held:
        return
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        # a shared lock conflicts with the writer's exclusive one, and is dropped at once
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(directory, fd) from None
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "DirectoryBusy", "acquire", "check_free", "holding", "release"]
