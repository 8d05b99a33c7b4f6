"""Run directories: what may become one, what holds one, and emptying one for ``--force``. Kept
free of torch and h5py, so that the command line checks a directory before it imports them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgeflow import lock
from edgeflow.errors import ConfigError

RESULTS = "results.h5"
CHECKPOINT = "checkpoint.pt"
#: files a run directory holds; a directory with any of them is an earlier run
RUN_FILES = (RESULTS, CHECKPOINT, "config.json", "config.toml", "summary.md", "summary.json")


def check_run_dir(out: str | Path, force: bool) -> Path:
    """Raise ``ConfigError`` unless ``out`` can become a run directory: not a file, not an earlier
    run (unless ``force``), not someone else's non-empty directory, and writable. Changes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if out.is_dir():
        lock.check_free(out)
        entries = [e.name for e in out.iterdir() if e.name != lock.LOCK_FILE]
        earlier = sorted(e for e in entries if e in RUN_FILES or e == "figures")
        if earlier and not force:
            raise ConfigError(
                f"{out} already holds a run ({', '.join(earlier)}); choose another --out, "
                f"pass --force to replace it, or --resume {out} to continue it"
            )
        if entries and not earlier:
            raise ConfigError(
                f"{out} is a non-empty directory that holds no edgeflow run; choose another --out"
            )
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run directory {out}: {existing} is not writable")
    return out


def prepare_run_dir(out: str | Path, force: bool) -> Path:
    """``check_run_dir``, then create the directory, or empty it when ``force`` replaces a run."""
    out = check_run_dir(out, force)
    empty_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the run directory {out}: {err.strerror or err}") from None
    return out


def empty_dir(path: Path) -> None:
    """Remove everything inside ``path`` (if it exists) but the lock, keeping the directory itself."""
    for entry in path.iterdir() if path.is_dir() else []:
        if entry.name == lock.LOCK_FILE:
            continue  # held by this process, which is about to write there
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_resumable(out: Path) -> None:
    """``out`` is a run directory with a checkpoint, or a ``ConfigError`` that says what it is."""
    if not out.is_dir():
        what = "is a file" if out.exists() else "does not exist"
        raise ConfigError(f"{out} {what}; --resume takes a run directory written by `edgeflow run`")
    if not any((out / name).exists() for name in RUN_FILES):
        raise ConfigError(f"{out} holds no edgeflow run (no {RESULTS}, {CHECKPOINT} or config)")
    if not (out / CHECKPOINT).is_file():
        again = (
            f"edgeflow run --config {out / 'config.toml'} --out {out} --force"
            if (out / "config.toml").is_file()
            else "start it again with --force"
        )
        raise ConfigError(
            f"{out} has no {CHECKPOINT}: the run stopped before its first checkpoint (taken "
            f"once every flow is initialized) or completed; to run it again: {again}"
        )


__all__ = [
    "CHECKPOINT",
    "RESULTS",
    "RUN_FILES",
    "check_resumable",
    "check_run_dir",
    "empty_dir",
    "prepare_run_dir",
]
