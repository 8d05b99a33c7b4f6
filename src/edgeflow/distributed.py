"""Data-parallel full-batch runs on PyTorch's own engine (``torch.distributed``, launched by
``torchrun``).

Each rank holds a shard of the examples; every oracle evaluation (loss, gradients, HVPs, third
derivatives) is the rank's local sum, all-reduced into the exact full-batch value, so every rank
steps identical states. What cannot be split (the central flow's CVXPY solve) runs on rank 0 and
is broadcast. Only rank 0 writes files and prints. Without an initialized process group everything
here is the identity and a single process runs as before.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from edgeflow.errors import ConfigError

T = TypeVar("T")
#: seconds a collective may wait for the other ranks before it fails (a rank that died or hangs)
DEFAULT_TIMEOUT = 600.0


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank died or hangs."""


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | None) -> str | None:
    """Join the process group that ``torchrun`` describes in the environment (gloo on the CPU, NCCL
    on CUDA with one GPU per rank, chosen by LOCAL_RANK) and return the device this rank uses.
    ``EDGEFLOW_DIST_TIMEOUT`` (seconds, default 600) bounds how long a rank waits for the others."""
    if not launched() or dist.is_initialized():
        return device
    try:
        timeout = float(os.environ.get("EDGEFLOW_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        raise ConfigError(
            f"EDGEFLOW_DIST_TIMEOUT must be a number of seconds, got {os.environ['EDGEFLOW_DIST_TIMEOUT']!r}"
        ) from None
    cuda = device is not None and device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"rank with LOCAL_RANK={local} has no GPU of its own ({torch.cuda.device_count()} "
                "visible); start at most one process per GPU"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    # The backend's threads start here and inherit this thread's signal mask: with SIGINT/SIGTERM/SIGHUP
    # blocked while they start, the signals reach only the main thread, whose handler stops the run
    # at a step boundary. (A gloo thread interrupted by SIGINT aborted the whole process.)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        dist.init_process_group(
            backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout)
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return device


def leave(together: bool = True) -> None:
    """Leave the process group ``init_from_env`` joined (at the end of a command). ``together``
    waits for the other ranks first: gloo aborts a rank that tears down while a peer still works
    (rank 0 writing the summary and figures, say). After a failed collective, leave alone."""
    if not (launched() and dist.is_available() and dist.is_initialized()):
        return
    try:
        if together:
            _collective(dist.barrier)
    finally:
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a process that ``torchrun`` started. After the process group is gone, the C++ teardown
    at interpreter exit still aborted now and then ("terminate called without an active
    exception", seen on loaded machines), so a launched rank flushes and leaves without it."""
    if not launched():
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shard(n: int) -> slice:
    """This rank's contiguous share of ``n`` examples (sizes differ by at most one)."""
    size, r = world_size(), rank()
    if n < size:
        raise ConfigError(f"{n} examples cannot be split over {size} ranks; use fewer processes")
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def all_reduce(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Sums over ranks, in one collective: the tensors travel as one flat buffer."""
    if not active():
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    _collective(dist.all_reduce, flat)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view_as(t))
        start += t.numel()
    return tuple(out)


def largest(value: int) -> int:
    """The largest of the ranks' values, on every rank (e.g. the number of a stop signal that
    reached one rank first, 0 where none did)."""
    if not active():
        return value
    t = torch.tensor([float(value)], device=_device())
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX)
    return int(t.item())


def on_main(fn: Callable[[], T], share: bool = True) -> T | None:
    """``fn()`` evaluated on rank 0 only; its result (``share``; else None on the other ranks) or its
    exception reaches every rank."""
    if not active():
        return fn()
    box: list = [None]
    result = None
    if is_main():
        try:
            result = fn()
            box[0] = ("ok", result if share else None)
        except Exception as err:  # raised again on every rank, below
            box[0] = ("error", err)
    _collective(dist.broadcast_object_list, box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return result if is_main() else value


def barrier() -> None:
    if active():
        _collective(dist.barrier)


def _device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def _collective(collective: Callable, *args, **kwargs) -> None:
    try:
        collective(*args, **kwargs)
    except (RuntimeError, dist.DistError) as err:
        raise DistributedError(
            f"rank {rank()}: a collective with the other ranks failed ({type(err).__name__}): another "
            f"rank died or hangs (EDGEFLOW_DIST_TIMEOUT bounds the wait): {str(err).splitlines()[0]}"
        ) from None
