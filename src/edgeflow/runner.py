"""The comparison runner: GD and its models stepped in lockstep, measured at the same steps."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from edgeflow.errors import ConfigError
from edgeflow.oracle import Counts, Problem
from edgeflow.processes import Process, make_process, process_class
from edgeflow.results import FlowRecord, Result
from edgeflow.utils import positive_float, positive_int

log = logging.getLogger("edgeflow")

#: flows whose positions every other flow's distance is measured against
REFERENCES = ("midpoint", "gd")


def compare(
    problem: Problem,
    lr: float,
    steps: int,
    flows: Sequence[str] = ("gd", "midpoint", "gradient"),
    *,
    record_every: int = 1,
    sharpness_every: int | None = None,
    save_params: bool = False,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    w0: Tensor | None = None,
    progress: bool = False,
    config: dict | None = None,
) -> Result:
    """Run every flow in ``flows`` from ``w0`` (default ``problem.w0``) for ``steps`` GD steps.

    Records at steps ``0, record_every, 2·record_every, …`` and at the last step; the top Hessian
    eigenvalue is measured at records that are multiples of ``sharpness_every`` (NaN elsewhere).
    A flow whose state or loss becomes non-finite stops; its records up to then are kept and
    ``res[flow].info['diverged_at']`` holds the step.
    """
    lr = positive_float("lr", lr)
    steps = positive_int("steps", steps)
    record_every = positive_int("record_every", record_every)
    sharpness_every = (
        record_every if sharpness_every is None else positive_int("sharpness_every", sharpness_every)
    )
    if sharpness_every % record_every:
        raise ConfigError(
            f"sharpness_every ({sharpness_every}) must be a multiple of record_every ({record_every})"
        )
    flows = list(dict.fromkeys(flows))
    if not flows:
        raise ConfigError("no flows given; valid choices: see `edgeflow list`")
    for name in flows:
        process_class(name)
    options = dict(options or {})
    procs = build_processes(problem, lr, flows, options)
    w0 = problem.w0 if w0 is None else w0.to(dtype=problem.dtype, device=problem.device)
    cost = {name: Counts() for name in flows}
    init_cost = {name: Counts() for name in flows}
    measure = {name: Counts() for name in flows}
    wall = dict.fromkeys(flows, 0.0)
    diverged: dict[str, int] = {}
    records: dict[str, dict[str, list]] = {name: {"step": []} for name in flows}
    params: dict[str, list] = {name: [] for name in flows}
    refs = [r for r in REFERENCES if r in procs]
    pairs = [(a, b) for a, b in itertools.permutations(flows, 2) if b in refs and a != b]
    pairs = [(a, b) for a, b in pairs if not (a in refs and refs.index(a) < refs.index(b))]
    dist: dict[str, list[float]] = {f"{a}-{b}": [] for a, b in pairs}
    dist.update({f"{r}-w0": [] for r in refs})
    dist_steps: list[int] = []

    for name, proc in procs.items():
        with _metered(problem, init_cost[name]):
            proc.init(w0, seed)

    def alive() -> list[str]:
        return [n for n in flows if n not in diverged]

    def record(k: int) -> None:
        want_sharpness = k % sharpness_every == 0
        for name in alive():
            with _metered(problem, measure[name]):
                obs = procs[name].observe(want_sharpness)
            if not math.isfinite(obs["train_loss"]):
                _diverge(name, k, diverged)
                continue
            rec = records[name]
            rec["step"].append(k)
            for key, value in obs.items():
                rec.setdefault(key, []).append(value)
            if save_params:
                params[name].append(procs[name].position.detach().cpu().numpy().copy())
        dist_steps.append(k)
        for a, b in pairs:
            ok = a not in diverged and b not in diverged
            d = float((procs[a].position - procs[b].position).norm()) if ok else math.nan
            dist[f"{a}-{b}"].append(d)
        for r in refs:
            d = float((procs[r].position - w0).norm()) if r not in diverged else math.nan
            dist[f"{r}-w0"].append(d)

    with tqdm(total=steps, disable=not progress, desc=problem.name, unit="step") as bar:
        for k in range(steps + 1):
            if k % record_every == 0 or k == steps:
                record(k)
            if k == steps or not alive():
                break
            for name in alive():
                proc = procs[name]
                with _metered(problem, cost[name], wall, name):
                    proc.step()
                if not proc.is_finite():
                    _diverge(name, k + 1, diverged)
            bar.update(1)

    out = {}
    for name in flows:
        data = {
            key: np.asarray(values, dtype=np.int64 if key == "step" else np.float64)
            for key, values in records[name].items()
        }
        if save_params:
            data["params"] = np.asarray(params[name]).reshape(len(params[name]), problem.dim)
        done = diverged.get(name, steps)
        info = {
            "diverged_at": diverged.get(name),
            "steps_completed": done,
            "cost": cost[name].as_dict(),
            "init_cost": init_cost[name].as_dict(),
            "measurement_cost": measure[name].as_dict(),
            "wall_time": wall[name],
            "options": options.get(name, {}),
        }
        out[name] = FlowRecord(data, info)
    distances = {key: np.asarray(v, dtype=np.float64) for key, v in dist.items()}
    distances["step"] = np.asarray(dist_steps, dtype=np.int64)
    cfg = {
        "problem": problem.name,
        "lr": lr,
        "steps": steps,
        "flows": flows,
        "record_every": record_every,
        "sharpness_every": sharpness_every,
        "save_params": save_params,
        "seed": seed,
        "options": options,
        "dtype": str(problem.dtype).removeprefix("torch."),
        "device": str(problem.device),
        "dim": problem.dim,
        **(config or {}),
    }
    return Result(lr, out, distances, cfg)


def build_processes(
    problem: Problem, lr: float, flows: Sequence[str], options: dict[str, dict] | None = None
) -> dict[str, Process]:
    """Construct (without evaluating anything) every flow with its options; raises ``ConfigError``
    for an unknown flow, an unknown or invalid option, or options for a flow that is not run."""
    options = dict(options or {})
    for name in options:
        if name not in flows:
            raise ConfigError(f"options given for flow {name!r}, which is not run ({', '.join(flows)})")
    return {name: make_process(name, problem, lr, options.get(name)) for name in flows}


def _diverge(name: str, k: int, diverged: dict[str, int]) -> None:
    diverged[name] = k
    log.warning("%s diverged at step %d (non-finite loss or parameters); its records stop there", name, k)


class _metered:
    """Adds the oracle evaluations (and optionally wall time) of a block to a per-flow tally."""

    def __init__(self, problem: Problem, tally: Counts, wall: dict | None = None, key: str = ""):
        self.problem, self.tally, self.wall, self.key = problem, tally, wall, key

    def __enter__(self) -> None:
        self.before = self.problem.counts.copy()
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.wall is not None:
            if self.problem.device.type == "cuda":
                torch.cuda.synchronize(self.problem.device)
            self.wall[self.key] += time.perf_counter() - self.t0
        self.tally.add_(self.problem.counts - self.before)
