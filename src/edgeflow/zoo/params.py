"""Problem parameters: a value given for one (``--param``, a config file, ``make_problem``) is checked
against the parameter's default in the builder's signature, so every builder declares its own."""

from __future__ import annotations

from edgeflow.errors import unknown_key
from edgeflow.utils import check_type


def check_params(problem: str, params: dict, defaults: dict) -> None:
    """Unknown names, and values of another type than the parameter's default (a None default
    takes anything)."""
    for key, value in params.items():
        if key not in defaults:
            raise unknown_key("parameter", key, f"problem {problem!r}", defaults)
        if defaults[key] is not None:
            what = f"parameter {key!r} of problem {problem!r}"
            check_type(what, value, type(defaults[key]).__name__, defaults[key])
