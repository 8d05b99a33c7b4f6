"""Problem parameters: a value given for one (``--param``, a config file, ``make_problem``) is checked
against the parameter's default in the builder's signature, so every builder declares its own."""

from __future__ import annotations

from edgeflow.errors import ConfigError, unknown_key

# What a parameter's default says about the values it takes; a None default takes anything.
_KINDS: list[tuple[type, tuple[type, ...], str]] = [
    (bool, (bool,), "true or false"),
    (int, (int,), "an integer"),
    (float, (int, float), "a number"),
    (str, (str,), "a string"),
]


def check_params(problem: str, params: dict, defaults: dict) -> None:
    """Unknown names, and values of another type than the parameter's default."""
    for key, value in params.items():
        if key not in defaults:
            raise unknown_key("parameter", key, f"problem {problem!r}", defaults)
        default = defaults[key]
        for kind, accepted, what in _KINDS:
            # bool before int: a bool default takes only bools, and no number takes a bool
            if isinstance(default, kind):
                if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
                    raise ConfigError(
                        f"parameter {key!r} of problem {problem!r} must be {what} "
                        f"(like its default {default!r}), got {value!r}"
                    )
                break
