"""The named problems, flows and optimizers, each parameter and option with its default and type,
read without importing torch.

`edgeflow list` prints it, and the command line checks a run's names against it before it imports
torch and the zoo (seconds), so that a misspelt name answers at once. It is a copy of what the
registries declare (``edgeflow.zoo.PROBLEMS``, ``edgeflow.processes.PROCESSES``,
``edgeflow.optimizers.OPTIMIZERS`` and their signatures), kept in catalog.json: after changing a
registry, run ``python -m edgeflow.catalog`` to write it again; a test holds the two equal.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edgeflow.errors import ConfigError, invalid_choice, unknown_key
from edgeflow.utils import declared_type

PATH = Path(__file__).with_name("catalog.json")


def is_factory(name: str) -> bool:
    """Whether ``name`` points at a user's problem factory (``module:function``), not the catalog."""
    return isinstance(name, str) and ":" in name


@functools.cache
def load() -> dict:
    """``{"problems" | "flows" | "optimizers": {name: entry}}``, each entry with its ``description``
    and its ``params`` or ``options`` as ``{key: [default as on the command line, type]}``."""
    return json.loads(PATH.read_text(encoding="utf-8"))


def check_problem(problem: str, params: Iterable[str]) -> None:
    """A named problem and its parameters' names (``ConfigError`` naming the valid ones, as the
    registry would); a factory's parameters are its own, checked when it is imported."""
    if is_factory(problem):
        return
    valid = _entry("problems", "problem", problem)["params"]
    for key in params:
        if key == "download" and key not in valid:
            raise ConfigError(f"problem {problem!r} has no dataset to download (--download)")
        if key not in valid:
            raise unknown_key("parameter", key, f"problem {problem!r}", valid)


def check_flows(flows: Sequence[str], options: dict[str, dict]) -> None:
    """Flow names, and each flow's option names (options only for flows that run)."""
    for flow in flows:
        _entry("flows", "flow", flow)
    for flow, given in options.items():
        if flow not in flows:
            raise not_run(flow, flows)
        valid = load()["flows"][flow]["options"]
        for key in given:
            if key not in valid:
                raise unknown_key("option", key, f"flow {flow!r}", valid)


def check_optimizer(optimizer: str, options: Iterable[str]) -> None:
    valid = _entry("optimizers", "optimizer", optimizer)["options"]
    for key in options:
        if key not in valid:
            raise unknown_key("option", key, f"optimizer {optimizer!r}", valid)


def not_run(flow: str, flows: Iterable[str]) -> ConfigError:
    return ConfigError(f"options given for flow {flow!r}, which is not run ({', '.join(flows)})")


def _entry(table: str, what: str, name: str) -> dict:
    entries = load()[table]
    if not isinstance(name, str) or name not in entries:
        raise invalid_choice(what, name, entries)
    return entries[name]


def build() -> dict:
    """The catalog, read from the registries (imports torch and every problem and flow)."""
    from edgeflow.optimizers import OPTIMIZERS
    from edgeflow.processes import PROCESSES, option_names
    from edgeflow.zoo import PROBLEMS, problem_params

    problems = {
        name: {
            "description": spec.description,
            "settings": {
                key: getattr(spec, key) for key in ("lr", "steps", "dtype", "record_every", "sharpness_every")
            },
            "params": _typed(spec.build, problem_params(name)),
        }
        for name, spec in PROBLEMS.items()
    }
    flows = {}
    for name, cls in PROCESSES.items():
        signature = inspect.signature(cls.__init__).parameters
        only = f" [{cls.modelled()} only]" if cls.optimizers else ""
        flows[name] = {
            "description": cls.description + only,
            "options": _typed(cls.__init__, {k: signature[k].default for k in option_names(name)}),
        }
    optimizers = {
        name: {
            "description": f"{opt.description}; threshold {opt(1.0).threshold:g} on λ₁(P⁻¹H)",
            "options": _typed(opt, opt.option_defaults()),
        }
        for name, opt in OPTIMIZERS.items()
    }
    return {"problems": problems, "flows": flows, "optimizers": optimizers}


def dumps(catalog: dict) -> str:
    """catalog.json's text: indented, each ``[default, type]`` pair on its key's line."""
    text = json.dumps(catalog, indent=1, ensure_ascii=False)
    return re.sub(r"\[\n *(\".*\"),\n *(\".*\")\n *\]", r"[\1, \2]", text) + "\n"


def _typed(fn: Callable, defaults: dict) -> dict[str, list[str]]:
    """``{key: [default as written after KEY= on the command line, type from fn's signature]}``."""
    signature = inspect.signature(fn).parameters
    return {
        key: [_cli_value(default), declared_type(signature[key].annotation, default)]
        for key, default in defaults.items()
    }


def _cli_value(value: object) -> str:
    """A default as it is written after ``KEY=`` (JSON for true, false, null)."""
    if value is inspect.Parameter.empty:
        return "(required)"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


if __name__ == "__main__":
    PATH.write_text(dumps(build()), encoding="utf-8")
    print(f"wrote {PATH}")
