"""How many threads torch computes with: chosen for the problem's size and the machine's load.

torch starts one intra-op thread per core. On the small problems most runs use (the default MLP has
d = 5,000 parameters) a matrix product is over before extra threads have woken up, and on a machine
that other jobs share, threads that spin waiting for each other made the default run 10–20× slower
(16 minutes instead of about one on 2 shared cores). So a small problem gets one thread, a large one
the physical cores that are idle.
"""

from __future__ import annotations

import os

from edgeflow.errors import ConfigError
from edgeflow.utils import positive_int

#: below this many parameters one thread is fastest: the default MLP (d ≈ 5·10³) and the MNIST CNN
#: (d ≈ 10⁵) spend their time in products too small to split
SMALL = 100_000
AUTO = "auto"


def available_cores() -> int:
    """The cores this process may run on, counting each physical core once (hyper-threads share
    one core's arithmetic units, which is all that full-batch products use)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[tuple[str, str]] = set()
    try:
        blocks = open("/proc/cpuinfo").read().split("\n\n")
    except OSError:
        return len(allowed)
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if fields.get("processor", "").isdigit() and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(1, min(len(cores) or len(allowed), len(allowed)))


def idle_cores() -> int:
    """The available cores that the last minute's load average leaves free (at least one)."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def choose(requested: int | str | None, dim: int) -> int:
    """The thread count for a problem of ``dim`` parameters: ``requested`` when it is a number;
    ``auto`` (or None) → 1 below ``SMALL`` parameters, else the idle physical cores."""
    if requested is None or requested == AUTO:
        return 1 if dim < SMALL else idle_cores()
    return positive_int("threads", requested)


def request(given: object) -> int | str | None:
    """What the command line asks for: ``given`` (``--threads``, or ``threads`` in a config file)
    checked; without it ``auto``, unless ``OMP_NUM_THREADS`` is set, which torch already follows
    (None: leave torch's count as it is)."""
    if given is not None:
        return check(given)
    return None if os.environ.get("OMP_NUM_THREADS") else AUTO


def use(requested: int | str | None, dim: int) -> int:
    """Set torch's thread count for a problem of ``dim`` parameters (None: keep it); returns it."""
    import torch

    if requested is not None:
        torch.set_num_threads(choose(requested, dim))
    return torch.get_num_threads()


def check(requested: object) -> int | str:
    """A ``--threads`` value: a positive integer or ``auto``."""
    if requested == AUTO:
        return AUTO
    try:
        return positive_int("threads", requested)
    except ConfigError:
        raise ConfigError(f"--threads must be a positive integer or {AUTO}, got {requested!r}") from None


__all__ = ["AUTO", "SMALL", "available_cores", "check", "choose", "idle_cores", "request", "use"]
