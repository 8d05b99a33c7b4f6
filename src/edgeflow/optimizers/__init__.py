"""Optimizers: GD, the preconditioned methods and the momentum methods, one module each.

Each is a frozen description (the learning rate and its hyper-parameters) with pure functions of
(w, g, state): see ``edgeflow.optimizers.base``. A new optimizer is one module with an ``Optimizer``
subclass plus one entry in ``OPTIMIZERS``; then ``python -m edgeflow.catalog`` lets the command line
know it without importing torch.
"""

from __future__ import annotations

from typing import Any

from edgeflow.errors import ConfigError, invalid_choice, unknown_key
from edgeflow.optimizers.adam import Adam, AdamW
from edgeflow.optimizers.base import Optimizer, State, add_states
from edgeflow.optimizers.gd import GD
from edgeflow.optimizers.momentum import Momentum, Nesterov
from edgeflow.optimizers.rmsprop import RMSProp, ScalarRMSProp

OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (GD, ScalarRMSProp, RMSProp, Momentum, Nesterov, Adam, AdamW)
}
GD_NAME = DEFAULT = "gd"


def optimizer_class(name: str) -> type[Optimizer]:
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise invalid_choice("optimizer", name, OPTIMIZERS)
    return OPTIMIZERS[name]


def make_optimizer(name: str, lr: float, options: dict[str, Any] | None = None) -> Optimizer:
    """The optimizer ``name`` at learning rate ``lr`` with ``options`` (its other hyper-parameters);
    unknown options and invalid values raise ``ConfigError`` naming them."""
    cls = optimizer_class(name)
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"optimizer_options must be a dict of option names to values, got {options!r}")
    options = dict(options or {})
    valid = cls.option_defaults()
    for key in options:
        if key not in valid:
            raise unknown_key("option", key, f"optimizer {name!r}", valid)
    return cls(lr, **options)


__all__ = [
    "DEFAULT",
    "GD_NAME",
    "OPTIMIZERS",
    "Optimizer",
    "State",
    "add_states",
    "make_optimizer",
    "optimizer_class",
]
