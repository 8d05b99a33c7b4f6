"""Run configuration: defaults, then a TOML file, then command-line flags (each overrides the last).

A file holds any of the keys of ``RunConfig``; problem parameters go in ``[params]`` and flow
options in ``[options.<flow>]``::

    problem = "mnist5k-cnn"
    lr = 0.2
    flows = ["gd", "midpoint", "edge", "central"]

    [params]
    n = 256
    channels = 8

    [options.edge]
    substeps = 4

The optimizer (``optimizer = "rmsprop"``) takes its hyper-parameters from ``[optimizer_options]``.
Every run directory gets the resolved configuration as ``config.toml``; ``edgeflow run --config
that/config.toml`` runs the same experiment again.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edgeflow import catalog
from edgeflow.errors import ConfigError
from edgeflow.utils import RUN_KEYWORDS, seed_int

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The flows ``edgeflow run`` compares when none are named. The modified flow is left out: near EoS
#: it is stiff (rate ηλ(1 + ηλ/2) ≥ 4) and costs ~5× gradient flow per step on the default problem.
DEFAULT_FLOWS = ("gd", "midpoint", "edge", "gradient")


@dataclass
class RunConfig:
    problem: str = "digits-mlp"
    lr: float | None = None  # None: the problem's default
    steps: int | None = None
    flows: list[str] = field(default_factory=lambda: list(DEFAULT_FLOWS))
    out: str | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str | None = None
    record_every: int | None = None
    sharpness_every: int | None = None
    save_params: bool = False
    params_every: int = 1  # with save_params: every N records
    params_dtype: str | None = None  # with save_params: float32 or float64 (None: the problem's)
    flush_every: int = 20  # append records to results.h5 every N records (and every 30 s)
    checkpoint_every: int | None = None  # checkpoint every N steps (None: every 60 s)
    plots: bool = True
    optimizer: str = "gd"  # what flow gd runs and every model models (edgeflow.optimizers)
    warm_start: int = 0  # plain optimizer steps before every flow starts (the central-flows code's)
    threads: int | str | None = None  # torch's threads: a number or "auto" (None: auto, or OMP_NUM_THREADS)
    params: dict = field(default_factory=dict)  # problem parameters (sizes, loss, data options)
    options: dict[str, dict] = field(default_factory=dict)  # flow -> {option: value}
    optimizer_options: dict = field(default_factory=dict)  # the optimizer's hyper-parameters but η

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def merged(cls, *layers: dict) -> RunConfig:
        """Later layers override earlier ones key by key; ``params`` and each flow's ``options``
        merge per entry, so a flag changes one parameter of the file, not all of them."""
        cfg = asdict(cls())
        for layer in layers:
            _check_keys(layer, "configuration")
            for key, value in layer.items():
                if key == "params":
                    cfg["params"] = {**cfg["params"], **_params(value)}
                elif key == "options":
                    opts = {flow: dict(v) for flow, v in cfg["options"].items()}
                    for flow, table in _table(value, "options").items():
                        opts[flow] = {**opts.get(flow, {}), **_table(table, f"options.{flow}")}
                    cfg["options"] = opts
                elif key == "optimizer_options":
                    cfg["optimizer_options"] = {**cfg["optimizer_options"], **_table(value, key)}
                elif key == "flows":
                    cfg["flows"] = _flow_list(value)
                elif key == "seed":
                    cfg["seed"] = seed_int("seed", value)
                else:
                    cfg[key] = _typed(key, value)
        return cls(**cfg)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(_without_none(asdict(self)))


# The accepted types of each plain setting, and how to say so. None is the "unset" of the optional
# ones; strings for the numbers come from the command line and are checked when they are used.
_OPTIONAL = type(None)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "problem": ((str,), "a string"),
    "lr": ((int, float, str, _OPTIONAL), "a number"),
    "steps": ((int, str, _OPTIONAL), "an integer"),
    "out": ((str, _OPTIONAL), "a string"),
    "device": ((str,), "a string"),
    "dtype": ((str, _OPTIONAL), "a string"),
    "record_every": ((int, str, _OPTIONAL), "an integer"),
    "sharpness_every": ((int, str, _OPTIONAL), "an integer"),
    "save_params": ((bool,), "true or false"),
    "params_every": ((int, str), "an integer"),
    "params_dtype": ((str, _OPTIONAL), "a string"),
    "flush_every": ((int, str), "an integer"),
    "checkpoint_every": ((int, str, _OPTIONAL), "an integer"),
    "plots": ((bool,), "true or false"),
    "optimizer": ((str,), "a string"),
    "warm_start": ((int, str), "an integer"),
    "threads": ((int, str, _OPTIONAL), 'a positive integer or "auto"'),
}


def load_toml(path: str | Path) -> dict:
    """The configuration layer in a TOML file (keys are checked when layers are merged)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give a TOML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a UTF-8 text file (TOML)") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None


def _check_keys(layer: dict, where: str) -> None:
    unknown = [k for k in layer if k not in RunConfig.keys()]
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in the {where}; valid keys: {', '.join(RunConfig.keys())}"
        )


def _typed(key: str, value: object) -> object:
    types, what = _TYPES[key]
    # bool is an int to Python, but `lr = true` or `plots = 1` is a mistake, not a number or a flag
    if not isinstance(value, types) or isinstance(value, bool) != (bool in types):
        raise ConfigError(f"{key} must be {what}, got {value!r}")
    return value


def _params(value: object) -> dict:
    params = _table(value, "params")
    for key in RUN_KEYWORDS:  # make_problem takes these as keywords of their own
        if key in params:
            raise ConfigError(
                f"{key!r} is a setting of the run, not a problem parameter: "
                f"use --{key} (or `{key} = ...` at the top of a config file)"
            )
    return params


def _table(value: object, name: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{name!r} must be a table of key = value pairs, got {value!r}")
    return value


def _flow_list(value: object) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(f, str) for f in items):
        raise ConfigError(f"flows must be a list of names or a comma-separated string, got {value!r}")
    flows = [f.strip() for f in items if f.strip()]
    if not flows:
        valid = ", ".join(catalog.load()["flows"])
        raise ConfigError(f"flows {value!r} names no flow; valid choices: {valid}")
    for i, flow in enumerate(flows):
        if flow in flows[:i]:
            raise ConfigError(f"flow {flow!r} is named twice in flows {value!r}; name each flow once")
    return flows


def _without_none(table: dict) -> dict:
    """TOML has no null: an unset value is left out (and reads back as its default)."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            value = _without_none(value)
        if value is not None and value != {}:
            out[key] = value
    return out
