"""Small validated conversions shared by the library and the command line."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgeflow.errors import ConfigError, invalid_choice

if TYPE_CHECKING:
    import torch


class _Dtypes(Mapping):
    """``{"float32": torch.float32, "float64": torch.float64}``, importing torch only when a dtype is
    looked up: the command line names the choices before it needs torch (which takes seconds)."""

    NAMES = ("float32", "float64")

    def __getitem__(self, name: str) -> torch.dtype:
        import torch

        if name not in self.NAMES:
            raise KeyError(name)
        return getattr(torch, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)


DTYPES: Mapping[str, torch.dtype] = _Dtypes()

#: the keywords every problem builder and factory takes besides its own parameters
RUN_KEYWORDS = ("seed", "dtype", "device")


def resolve_dtype(dtype: str | torch.dtype | None, default: torch.dtype) -> torch.dtype:
    import torch

    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise invalid_choice("dtype", str(dtype), DTYPES)
        return dtype
    if dtype not in DTYPES:
        raise invalid_choice("dtype", dtype, DTYPES)
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Parse a device string and check that this machine has it (no silent fallback to the CPU)."""
    import torch

    if device is None:
        return torch.device("cpu")
    valid = "cpu, cuda, cuda:N, mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; valid choices: {valid}") from None
    if dev.type == "cpu":
        if dev.index is not None:  # torch accepts "cpu:3" but there is only one CPU device
            raise ConfigError(f"unknown device {device!r} (the CPU takes no index); valid choices: {valid}")
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} is not available here (no CUDA GPU); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r} is not available here; use cpu")
        return dev
    raise ConfigError(f"unknown device {device!r}; valid choices: {valid}")


def _number(name: str, value: object, text: bool, what: str) -> float:
    """``value`` as a float; True/False are never numbers, and text only where ``text`` (the command
    line's values are text until they are used)."""
    if isinstance(value, bool) or (isinstance(value, str) and not text):
        raise ConfigError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be {what}, got {value!r}") from None


def positive_float(name: str, value: object, text: bool = True) -> float:
    x = _number(name, value, text, "a positive number")
    if not math.isfinite(x) or x <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return x


def positive_or_inf(name: str, value: object, text: bool = True) -> float:
    """A positive number, ``inf`` included: a threshold that ``inf`` turns off."""
    x = _number(name, value, text, "a positive number (inf: never)")
    if not x > 0:  # NaN fails too
        raise ConfigError(f"{name} must be a positive number (inf: never), got {value!r}")
    return x


#: The learning rates every flow computes with: 2/η, η² and η·S must stay finite floats (1e-320
#: made 2/η overflow in the summary, 1e300 made η² overflow in Edge Flow's rounding model). Both ends
#: are far outside any rate that trains.
LR_RANGE = (1e-300, 1e150)


def learning_rate(name: str, value: object, text: bool = True) -> float:
    x = positive_float(name, value, text)
    low, high = LR_RANGE
    if not low <= x <= high:
        raise ConfigError(f"{name} must be in [{low:g}, {high:g}] (2/η and η² finite), got {value!r}")
    return x


def nonnegative_float(name: str, value: object, text: bool = True) -> float:
    x = _number(name, value, text, "a finite number ≥ 0")
    if not math.isfinite(x) or x < 0:
        raise ConfigError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return x


def positive_int(name: str, value: object, at_most: int | None = None, text: bool = True) -> int:
    x = _number(name, value, text, "a positive integer")
    if not math.isfinite(x) or x <= 0 or x != int(x):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if at_most is not None and x > at_most:
        raise ConfigError(f"{name} must be at most {at_most:_}, got {value!r}")
    return int(x)


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (on a GPU with what torch holds cached but unused; on the CPU,
    MemAvailable), None where it cannot be read."""
    import torch

    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + cached
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(need: int, device: torch.device, what: str, advice: str) -> None:
    """``ConfigError`` when ``need`` bytes exceed what ``device`` has free (nothing where that cannot be
    read), saying "WHAT need N GiB, more than the M GiB available on DEVICE; ADVICE"."""
    have = available_memory(device)
    if have is not None and need > have:
        raise ConfigError(
            f"{what} need {need / 2**30:.3g} GiB, more than the {have / 2**30:.3g} GiB available "
            f"on {device}; {advice}"
        )


#: more GD steps than this is a typo (10⁹ steps at 1 ms each take 11 days)
MAX_STEPS = 10**9


#: the largest seed a TOML integer (signed 64-bit) holds, so every run's config.toml reads back
MAX_SEED = 2**63 - 1


def seed_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be an integer in [0, 2**63 - 1], got {value!r}")
    return int(value)


#: what a declared type accepts, and how to say so
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "true or false"),
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "str": ((str,), "a string"),
    "None": ((type(None),), "None"),
}


def declared_type(annotation: object, default: object) -> str:
    """A parameter's type as its signature declares it (``"int | None"``); without an annotation,
    its default's type (``"any"`` for a None default)."""
    if annotation is inspect.Parameter.empty:
        return "any" if default is None or default is inspect.Parameter.empty else type(default).__name__
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def check_type(what: str, value: object, declared: str, default: object = None) -> None:
    """``ConfigError`` naming ``what`` unless ``value`` is of the ``declared`` type (bool, int, float,
    str, None, or a union of them; others are left to their owner). bool is never a number, and text
    is not one either: the command line parses its values before they get here."""
    kinds = [kind.strip() for kind in declared.split("|")]
    if not all(kind in _KINDS for kind in kinds):
        return
    for kind in kinds:
        accepted, _ = _KINDS[kind]
        if isinstance(value, accepted) and (kind == "bool" or not isinstance(value, bool)):
            return
    valid = ", or ".join(_KINDS[kind][1] for kind in kinds)
    like = "" if default is None else f" (like its default {default!r})"
    raise ConfigError(f"{what} must be {valid}{like}, got {value!r} ({type(value).__name__})")


def parse_lrs(value: str | Sequence[float], name: str = "lrs") -> list[float]:
    """``"0.1,0.05"`` or ``[0.1, 0.05]`` → ``[0.05, 0.1]``: positive finite, at least one, no repeats."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not items or all(isinstance(x, str) and not x.strip() for x in items):
        raise ConfigError(f"{name} names no learning rate; give a comma-separated list like 0.05,0.1,0.2")
    lrs = [learning_rate(f"{name} entry", x.strip() if isinstance(x, str) else x) for x in items]
    repeated = sorted({x for x in lrs if lrs.count(x) > 1})
    if repeated:
        raise ConfigError(f"{name}: learning rate {repeated[0]:g} is given more than once; give each once")
    return sorted(lrs)
