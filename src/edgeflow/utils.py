"""Small validated conversions shared by the library and the command line."""

from __future__ import annotations

import math
import numbers

import torch

from edgeflow.errors import ConfigError, invalid_choice

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

#: the keywords every problem builder and factory takes besides its own parameters
RUN_KEYWORDS = ("seed", "dtype", "device")


def resolve_dtype(dtype: str | torch.dtype | None, default: torch.dtype) -> torch.dtype:
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


def positive_float(name: str, value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return x


def nonnegative_float(name: str, value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a finite number ≥ 0, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ConfigError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return x


def positive_int(name: str, value: object, at_most: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}") from None
    if not math.isfinite(x) or x <= 0 or x != int(x):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if at_most is not None and x > at_most:
        raise ConfigError(f"{name} must be at most {at_most:_}, got {value!r}")
    return int(x)


#: more GD steps than this is a typo (10⁹ steps at 1 ms each take 11 days)
MAX_STEPS = 10**9


#: the largest seed a TOML integer (signed 64-bit) holds, so every run's config.toml reads back
MAX_SEED = 2**63 - 1


def seed_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be an integer in [0, 2**63 - 1], got {value!r}")
    return int(value)
