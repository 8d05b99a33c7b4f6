"""Errors that the command line turns into one clear line and exit code 2, and the one numerical
failure that is not the user's input."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A user-supplied value is invalid; the message names the value and the valid choices."""


class IntegrationError(RuntimeError):
    """A flow's numerical method failed: an ODE integrator could not follow the flow within its
    sub-step budget (the flow is too stiff there), or the central flow's SDCP solver failed. It says
    nothing about the flow itself diverging."""


class StorageError(RuntimeError):
    """A run could not write its records or checkpoint (a full disk, a file system gone read-only).
    What was written before stays readable and resumable; the message names the path and the cause."""

    def __init__(self, path: object, cause: str) -> None:
        super().__init__(f"cannot write {path}: {cause}")
        self.path, self.cause = path, cause


def invalid_choice(what: str, value: object, choices: Iterable[object]) -> ConfigError:
    listed = ", ".join(str(c) for c in choices)
    return ConfigError(f"unknown {what} {value!r}; valid choices: {listed}")


def unknown_key(what: str, key: object, owner: str, valid: Iterable[str]) -> ConfigError:
    """``unknown option 'x' for flow 'edge'; valid options: ...`` (``owner`` as it reads there)."""
    listed = ", ".join(valid) or "none"
    return ConfigError(f"unknown {what} {key!r} for {owner}; valid {what}s: {listed}")
