"""Checkpoints: the full state of a run, written atomically and read back without unpickling code.

A process's state is every attribute it sets (its configuration is rebuilt from the run's settings
by its constructor, the rest is restored verbatim): tensors, numbers, strings, numpy arrays, torch
generators (their state), and nested processes or sharpness trackers (their own state). Restoring
everything exactly, cached gradients and eigen-solver warm starts included, is what makes a resumed
run bit-identical to an uninterrupted one. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeflow.errors import ConfigError, StorageError
from edgeflow.rundir import CHECKPOINT

FORMAT = "edgeflow-checkpoint/1"
#: attributes that point back at the shared loss oracle or are the run's settings (rebuilt, never saved)
_SHARED = ("problem", "optimizer")
_SCALARS = (bool, int, float, str, type(None))


def state_of(obj: object, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every attribute of ``obj`` (a process or tracker) except the shared problem and ``skip``
    (what the caller saves its own way), packed."""
    return {
        key: pack(value, f"{type(obj).__name__}.{key}")
        for key, value in vars(obj).items()
        if key not in _SHARED and key not in skip
    }


def restore(obj: object, state: dict[str, Any]) -> None:
    """Set the attributes of ``obj`` from ``state_of`` output; nested objects share ``obj.problem``."""
    problem = getattr(obj, "problem", None)
    for key, value in state.items():
        setattr(obj, key, unpack(value, problem))


def pack(value: object, where: str = "value") -> Any:
    from edgeflow.oracle import SharpnessTracker
    from edgeflow.processes import Process

    if isinstance(value, _SCALARS) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Generator):
        return {"__generator__": value.get_state(), "device": str(value.device)}
    if isinstance(value, Process):
        return {"__process__": value.name, "lr": value.lr, "state": value.state_dict()}
    if isinstance(value, SharpnessTracker):
        return {"__tracker__": state_of(value)}
    if isinstance(value, (list, tuple)):
        return [pack(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: pack(v, f"{where}.{k}") for k, v in value.items()}}
    raise TypeError(
        f"cannot checkpoint {where} of type {type(value).__name__}: a process's state must be "
        "tensors, numbers, strings, numpy arrays, generators, lists/dicts of those, or nested processes"
    )


def unpack(value: Any, problem: object) -> Any:
    from edgeflow.oracle import SharpnessTracker
    from edgeflow.processes import make_process

    if isinstance(value, list):
        return [unpack(v, problem) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    if "__generator__" in value:
        gen = torch.Generator(device=value["device"])
        gen.set_state(value["__generator__"])
        return gen
    if "__process__" in value:
        proc = make_process(value["__process__"], problem, value["lr"])  # type: ignore[arg-type]
        proc.load_state_dict(value["state"])
        return proc
    if "__tracker__" in value:
        tracker = SharpnessTracker(problem)  # type: ignore[arg-type]
        restore(tracker, value["__tracker__"])
        return tracker
    return {k: unpack(v, problem) for k, v in value["__dict__"].items()}


def save(path: str | os.PathLike, payload: dict) -> Path:
    """Write to a temporary file, sync, then rename: a kill never leaves a half-written checkpoint."""
    from edgeflow.storage import ensure_space

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # the last checkpoint's size: the next one is about as large, and the old stays until the rename
    ensure_space(path, path.stat().st_size if path.is_file() else 0)
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        tmp.unlink(missing_ok=True)
        cause = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise StorageError(path, cause) from None
    return path


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: the run stopped before its first checkpoint (taken once every "
            "flow is initialized); start it again with --force"
        )
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # a foreign or damaged file: say so in one line
        raise ConfigError(f"{path} is not a readable edgeflow checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an edgeflow checkpoint (format {FORMAT})")
    return payload


def to_device(value: Any, device: torch.device) -> Any:
    """Move every tensor of an unpacked-to-be state onto ``device`` (checkpoints load on the CPU);
    generator states stay on the CPU, where ``Generator.set_state`` wants them."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, dict):
        if "__generator__" in value or "__ndarray__" in value:
            return value
        return {k: to_device(v, device) for k, v in value.items()}
    return value


__all__ = ["CHECKPOINT", "load", "pack", "restore", "save", "state_of", "to_device", "unpack"]
