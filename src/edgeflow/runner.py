"""The comparison runner: GD and its models stepped in lockstep, measured at the same steps.

With a run directory (``compare(..., out=DIR)``) a run survives: its records stream into
``DIR/results.h5``, its full state is checkpointed atomically to ``DIR/checkpoint.pt`` (at step 0,
every ``checkpoint_every`` steps or ``checkpoint_seconds`` of computation, and on SIGINT/SIGTERM/SIGHUP;
a complete run drops it), and ``resume(DIR)`` continues it bit for bit. A checkpoint is taken at
a step boundary, before that step's records, so a resumed run repeats exactly what the
uninterrupted one did.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from edgeflow import checkpoint, lock
from edgeflow import distributed as parallel
from edgeflow.catalog import not_run
from edgeflow.errors import ConfigError, IntegrationError, StorageError
from edgeflow.optimizers import DEFAULT as DEFAULT_OPTIMIZER
from edgeflow.optimizers import Optimizer, State, make_optimizer
from edgeflow.oracle import Counts, Problem
from edgeflow.oracle.lanczos import MAX_ITER
from edgeflow.processes import Process, make_process, process_class
from edgeflow.results import DISTANCES, FlowRecord, Result
from edgeflow.rundir import check_resumable, check_run_dir, prepare_run_dir
from edgeflow.storage import RESULTS, MemoryRecords, NoRecords, ResultsWriter, load
from edgeflow.utils import MAX_STEPS, check_memory, dtype_name, learning_rate, positive_float, positive_int

log = logging.getLogger("edgeflow")

#: flows whose positions every other flow's distance is measured against
REFERENCES = ("midpoint", "gd")
PARAMS_DTYPES = ("float32", "float64")


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT/SIGTERM/SIGHUP at a step boundary, checkpointed and with its records saved."""

    def __init__(self, out: Path, step: int, signum: int) -> None:
        super().__init__(f"interrupted at step {step}; resume with: edgeflow run --resume {out}")
        self.out, self.step, self.signum = out, step, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def compare(
    problem: Problem,
    lr: float,
    steps: int,
    flows: Sequence[str] | str = ("gd", "midpoint", "gradient"),
    *,
    record_every: int = 1,
    sharpness_every: int | None = None,
    save_params: bool = False,
    params_every: int = 1,
    params_dtype: str | None = None,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    w0: Tensor | None = None,
    progress: bool = False,
    config: dict | None = None,
    out: str | Path | None = None,
    force: bool = False,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 60.0,
    flush_every: int = 20,
    files: dict[str, str] | None = None,
    load_result: bool = True,
    optimizer: str = DEFAULT_OPTIMIZER,
    optimizer_options: dict | None = None,
    warm_start: int = 0,
) -> Result | None:
    """Run every flow in ``flows`` from ``w0`` (default ``problem.w0``) for ``steps`` GD steps.

    ``optimizer`` (``edgeflow.optimizers.OPTIMIZERS``, default GD) with ``optimizer_options`` (its
    hyper-parameters besides ``lr``) is what flow ``gd`` runs and every model models; its
    ``warm_start`` plain steps from ``w0`` come first, and every flow starts from the point and
    optimizer state they reach (step 0 of the records is that point).

    Records at steps ``0, record_every, 2·record_every, …`` and at the last step; the top Hessian
    eigenvalue is measured at records that are multiples of ``sharpness_every`` (NaN elsewhere).
    ``save_params`` stores each flow's position every ``params_every`` records (as ``params_dtype``,
    default the problem's). A flow whose state or loss becomes non-finite stops; its records up to
    then are kept and ``res[flow].info['diverged_at']`` holds the step; a flow whose integrator
    fails stops with ``info['failed_at']`` and ``info['failure']``.

    With ``out`` the run streams into that directory (created; an earlier run there needs
    ``force=True``, which empties it), checkpoints, and on SIGINT/SIGTERM/SIGHUP stops at the next step
    boundary and raises ``RunInterrupted``; ``resume(out)`` continues it. ``files`` are text files
    (name → content) written into the run directory before the computation starts. With
    ``load_result=False`` nothing is read back and None is returned: the stored parameters then
    never enter memory (``edgeflow run`` reads the summary from the file without them).
    """
    if not isinstance(problem, Problem):
        hint = f"; build one with ef.make_problem({problem!r})" if isinstance(problem, str) else ""
        raise ConfigError(f"problem must be an edgeflow.Problem, got {type(problem).__name__}{hint}")
    settings = _settings(
        problem,
        lr,
        steps,
        flows,
        record_every,
        sharpness_every,
        save_params,
        params_every,
        params_dtype,
        seed,
    )
    settings["options"] = dict(options or {})
    opt = make_optimizer(optimizer, settings["lr"], optimizer_options)
    settings["optimizer"] = opt.name
    settings["optimizer_options"] = opt.options()
    settings["threshold"] = opt.threshold
    settings["warm_start"] = check_warm_start(warm_start)
    w0 = _start_point(problem, w0)
    w0, start_state = _warm_start(problem, opt, w0, warm_start)
    cfg = _plain({**settings, **(config or {})})
    if out is None:
        run = Run(problem, cfg, w0, start_state=start_state)
        run.start()
        run.execute(progress=progress)
        return run.result()
    flush_every = positive_int("flush_every", flush_every)
    out = Path(out)
    # Built before the directory is touched: a bad option or checkpoint interval writes nothing.
    run = Run(problem, cfg, w0, out, None, checkpoint_every, checkpoint_seconds, start_state)

    def create() -> ResultsWriter:
        path = prepare_run_dir(out, force)
        try:
            (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            for name, text in (files or {}).items():
                (path / name).write_text(text)
            groups = [*cfg["flows"], DISTANCES]
            return ResultsWriter.create(
                path / RESULTS, cfg["lr"], cfg, groups, flush_every=flush_every, params_dtype=params_dtype
            )
        except OSError as err:
            raise lock.unwritable(path, err) from None

    parallel.on_main(lambda: check_run_dir(out, force), share=False)  # before the lock creates it
    with writing(out, "a run", create=True):
        # Rank 0 owns the run directory; its errors (an existing run, say) reach every rank.
        writer = parallel.on_main(create, share=False)
        if writer is not None:
            run.sink = writer
        _execute_with_signals(run, progress, fresh=True)
    return run.result() if load_result else None


def check_warm_start(warm_start: object) -> int:
    """``warm_start`` if it is a number of steps in [0, MAX_STEPS], else ``ConfigError``."""
    if isinstance(warm_start, bool) or not isinstance(warm_start, int) or not 0 <= warm_start <= MAX_STEPS:
        raise ConfigError(f"warm_start must be a number of steps in [0, {MAX_STEPS}], got {warm_start!r}")
    return warm_start


@contextmanager
def writing(out: Path, doing: str, create: bool = False) -> Iterator[None]:
    """Hold the run directory ``out`` exclusively (rank 0, for every rank) while the block runs."""
    parallel.on_main(lambda: lock.acquire(out, doing, create), share=False)
    try:
        yield
    finally:
        if parallel.is_main():
            lock.release(out)


def resume(
    out: str | Path,
    problem: Problem | None = None,
    *,
    progress: bool = False,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 60.0,
    flush_every: int = 20,
    load_result: bool = True,
) -> Result | None:
    """Continue the run in ``out`` from its last checkpoint; the result is bit-identical to an
    uninterrupted run's. A named or factory problem is rebuilt from the run's settings; a problem
    built by hand (``Problem.from_function``/``from_module``) must be given again."""
    out = Path(out)
    check_resumable(out)
    with writing(out, "resuming a run"):
        run = Run.resume(out, problem, checkpoint_every, checkpoint_seconds, flush_every)
        _execute_with_signals(run, progress, fresh=False)
    return run.result() if load_result else None


def _execute_with_signals(run: Run, progress: bool, fresh: bool) -> None:
    with StopSignals() as stop:
        try:
            if fresh:
                run.start()
            finished = run.execute(progress=progress, stop=stop)
        except StorageError as err:
            err.checkpoint_step = run.saved_at  # what a resume will start from (None: nothing saved)
            raise
    if not finished:
        assert run.out is not None
        raise RunInterrupted(run.out, run.k, run.stopped_by)


class Run:
    """Every flow's process, the evaluation tallies, and where the records go."""

    def __init__(
        self,
        problem: Problem,
        config: dict,
        w0: Tensor,
        out: Path | None = None,
        writer: ResultsWriter | None = None,
        checkpoint_every: int | None = None,
        checkpoint_seconds: float = 60.0,
        start_state: State | None = None,
    ) -> None:
        self.problem = problem
        self.config = config
        self.w0 = w0
        self.out = out
        self.flows: list[str] = list(config["flows"])
        self.lr: float = config["lr"]
        self.steps: int = config["steps"]
        self.optimizer = run_optimizer(config)
        self.procs = build_processes(
            problem, self.lr, self.flows, config["options"], self.optimizer, start_state
        )
        check_run_memory(problem, self.flows)
        self.cost = {name: Counts() for name in self.flows}
        self.init_cost = {name: Counts() for name in self.flows}
        self.measure = {name: Counts() for name in self.flows}
        self.wall = dict.fromkeys(self.flows, 0.0)
        self.diverged: dict[str, int] = {}
        self.failed: dict[str, list] = {}  # flow -> [step, message]
        self.k = 0
        refs = [r for r in REFERENCES if r in self.procs]
        pairs = [(a, b) for a, b in itertools.permutations(self.flows, 2) if b in refs]
        self.pairs = [(a, b) for a, b in pairs if not (a in refs and refs.index(a) < refs.index(b))]
        self.refs = refs
        self.checkpoint_every = (
            None if checkpoint_every is None else positive_int("checkpoint_every", checkpoint_every)
        )
        self.checkpoint_seconds = positive_float("checkpoint_seconds", checkpoint_seconds)
        groups = [*self.flows, DISTANCES]
        self.sink = writer or (NoRecords if out is not None else MemoryRecords)(
            groups, config.get("params_dtype")
        )
        self.last_checkpoint = time.monotonic()
        self.checkpointed_at: int | None = None
        self.saved_at: int | None = None  # the step of the last checkpoint on disk
        self.complete = False
        self.stopped_by = 0  # the signal that stopped the run, 0 while none has

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        seed = self.config["seed"]
        for name, proc in self.procs.items():
            with _metered(self.problem, self.init_cost[name]):
                proc.init(self.w0, seed)
        if self.out is not None:
            self.checkpoint()

    @classmethod
    def resume(
        cls,
        out: Path,
        problem: Problem | None,
        checkpoint_every: int | None,
        checkpoint_seconds: float,
        flush_every: int,
    ) -> Run:
        payload = checkpoint.load(out / checkpoint.CHECKPOINT)
        config = payload["config"]
        problem = problem if problem is not None else _rebuild_problem(config, out)
        w0 = payload["w0"].to(dtype=problem.dtype, device=problem.device)
        if problem.dim != w0.numel() or not torch.equal(problem.w0.cpu(), payload["problem_w0"]):
            raise ConfigError(
                f"the problem given to resume {out} differs from the one the run started with "
                f"(dimension {problem.dim} vs {w0.numel()}, or other initial parameters)"
            )
        if config.get("world_size", 1) != parallel.world_size():
            raise ConfigError(
                f"the run in {out} ran on {config.get('world_size', 1)} process(es); resume it on as "
                f"many (now {parallel.world_size()}): the sums over ranks, and so the bits, depend on it"
            )
        flush_every = positive_int("flush_every", flush_every)
        writer = parallel.on_main(
            lambda: ResultsWriter.reopen(
                out / RESULTS,
                payload["records"],
                resumed_from=payload["step"],
                flush_every=flush_every,
                params_dtype=config.get("params_dtype"),
            ),
            share=False,
        )
        run = cls(problem, config, w0, out, writer, checkpoint_every, checkpoint_seconds)
        for name, state in payload["processes"].items():
            run.procs[name].load_state_dict(checkpoint.to_device(state, problem.device))
        for tally in ("cost", "init_cost", "measure"):
            for name, counts in payload[tally].items():
                getattr(run, tally)[name] = Counts(**counts)
        problem.counts = Counts(**payload["problem_counts"])
        run.wall = dict(payload["wall"])
        run.diverged = dict(payload["diverged"])
        run.failed = dict(payload["failed"])
        run.k = run.checkpointed_at = run.saved_at = int(payload["step"])
        torch.set_rng_state(payload["torch_rng"])
        log.info("resuming %s from step %d of %d", out, run.k, run.steps)
        return run

    def execute(self, progress: bool = False, stop: StopSignals | None = None) -> bool:
        """Step every flow to the last step (True), or until ``stop`` has caught a signal, on any
        rank, at a step boundary (False: the state is checkpointed and the records so far are
        saved; ``self.stopped_by`` holds the signal)."""
        steps, every = self.steps, self.config["record_every"]
        quiet = True if not (progress and parallel.is_main()) else None  # None: quiet off a terminal
        with tqdm(total=steps, initial=self.k, disable=quiet, desc=self.problem.name, unit="step") as bar:
            while True:
                k = self.k
                # Every rank stops at the same step, whichever the signal reached first.
                self.stopped_by = parallel.largest((stop.signum or 0) if stop is not None else 0)
                if self.stopped_by:
                    self.checkpoint()
                    self.finish(complete=False)
                    return False
                if self.out is not None and k != self.checkpointed_at and self._checkpoint_due(k):
                    self.checkpoint()
                if k % every == 0 or k == steps:
                    self.record(k)
                if k == steps or not self.alive():
                    break
                self.step_all(k)
                self.k = k + 1
                bar.update(1)
        self.finish(complete=True)
        return True

    def _checkpoint_due(self, k: int) -> bool:
        if self.checkpoint_every is not None:
            return k % self.checkpoint_every == 0
        return time.monotonic() - self.last_checkpoint >= self.checkpoint_seconds

    def checkpoint(self) -> None:
        """Flush the records, then write the full state atomically (rank 0's: all are equal)."""
        assert self.out is not None
        self.checkpointed_at = self.k
        if not parallel.is_main():
            return
        self.sink.flush(self.infos())
        p = self.problem
        payload = {
            "step": self.k,
            "config": self.config,
            "w0": self.w0.cpu(),
            "problem_w0": p.w0.cpu(),
            "processes": {name: proc.state_dict() for name, proc in self.procs.items()},
            "cost": {n: c.as_dict() for n, c in self.cost.items()},
            "init_cost": {n: c.as_dict() for n, c in self.init_cost.items()},
            "measure": {n: c.as_dict() for n, c in self.measure.items()},
            "problem_counts": p.counts.as_dict(),
            "wall": self.wall,
            "diverged": self.diverged,
            "failed": self.failed,
            "records": self.sink.counts(),
            "torch_rng": torch.get_rng_state(),
        }
        checkpoint.save(self.out / checkpoint.CHECKPOINT, payload)
        self.saved_at = self.k
        self.last_checkpoint = time.monotonic()

    def finish(self, complete: bool) -> None:
        """Write what the records do not hold (costs, divergence, completion). A complete run
        drops its checkpoint: there is nothing left to resume."""
        self.sink.finish(self.infos(), complete)
        self.complete = complete
        if complete and self.out is not None and parallel.is_main():
            (self.out / checkpoint.CHECKPOINT).unlink(missing_ok=True)

    # ------------------------------------------------------------------ the lockstep
    def alive(self) -> list[str]:
        return [n for n in self.flows if self._running(n)]

    def record(self, k: int) -> None:
        cfg = self.config
        want_sharpness = k % cfg["sharpness_every"] == 0
        for name in self.alive():
            proc = self.procs[name]
            try:
                with _metered(self.problem, self.measure[name]):
                    obs = proc.observe(want_sharpness)
            except FloatingPointError:  # finite but so large that its Hessian overflows
                self._diverge(name, k)
                continue
            if not math.isfinite(obs["train_loss"]):
                self._diverge(name, k)
                continue
            self.sink.append(name, {"step": k, **obs})
            if cfg["save_params"] and (
                (k // cfg["record_every"]) % cfg["params_every"] == 0 or k == self.steps
            ):
                params = proc.position.detach().cpu().numpy()
                self.sink.append(name, {"params": params, "params_step": k})
        row: dict = {"step": k}
        for a, b in self.pairs:
            ok = self._running(a) and self._running(b)
            row[f"{a}-{b}"] = (
                float((self.procs[a].position - self.procs[b].position).norm()) if ok else math.nan
            )
        for r in self.refs:
            row[f"{r}-w0"] = (
                float((self.procs[r].position - self.w0).norm()) if self._running(r) else math.nan
            )
        self.sink.append(DISTANCES, row)
        if self.sink.due():
            self.sink.flush()

    def _running(self, name: str) -> bool:
        """Neither diverged nor stopped by its integrator: its position is a valid point."""
        return name not in self.diverged and name not in self.failed

    def step_all(self, k: int) -> None:
        for name in self.alive():
            proc = self.procs[name]
            try:
                with _metered(self.problem, self.cost[name], self.wall, name):
                    proc.step()
            except IntegrationError as err:
                self.failed[name] = [k + 1, str(err)]
                log.warning("%s stopped at step %d: %s", name, k + 1, err)
                continue
            except FloatingPointError:  # the flow's iterate overflowed inside its step
                self._diverge(name, k + 1)
                continue
            if not proc.is_finite():
                self._diverge(name, k + 1)

    def _diverge(self, name: str, k: int) -> None:
        self.diverged[name] = k
        log.warning("%s diverged at step %d (non-finite loss or parameters); its records stop there", name, k)

    # ------------------------------------------------------------------ results
    def infos(self) -> dict[str, dict]:
        out = {}
        for name in self.flows:
            failed = self.failed.get(name)
            done = self.diverged.get(name, failed[0] if failed else self.k)
            out[name] = {
                "diverged_at": self.diverged.get(name),
                "failed_at": failed[0] if failed else None,
                "failure": failed[1] if failed else None,
                "steps_completed": done,
                "cost": self.cost[name].as_dict(),
                "init_cost": self.init_cost[name].as_dict(),
                "measurement_cost": self.measure[name].as_dict(),
                "wall_time": self.wall[name],
                "options": self.config["options"].get(name, {}),
            }
        return out

    def result(self) -> Result:
        if self.out is not None:
            parallel.barrier()  # rank 0 has written everything
            return load(self.out / RESULTS)
        assert isinstance(self.sink, MemoryRecords)
        infos = self.infos()
        flows = {name: FlowRecord(self._arrays(name), infos[name]) for name in self.flows}
        res = Result(self.lr, flows, self._arrays(DISTANCES), self.config)
        res.complete = self.complete
        return res

    def _arrays(self, group: str) -> dict[str, np.ndarray]:
        assert isinstance(self.sink, MemoryRecords)
        data = self.sink.arrays(group)
        if "step" not in data:  # a flow without records (diverged at step 0) still has its fields
            data = {"step": np.zeros(0, dtype=np.int64)}
        return data


def build_processes(
    problem: Problem,
    lr: float,
    flows: Sequence[str],
    options: dict[str, dict] | None = None,
    optimizer: Optimizer | None = None,
    start_state: State | None = None,
) -> dict[str, Process]:
    """Construct (without evaluating anything) every flow with its options, modelling ``optimizer``
    (default GD) from ``start_state``; raises ``ConfigError`` for an unknown flow, an unknown or
    invalid option, options for a flow that is not run, or a flow not defined for the optimizer."""
    options = dict(options or {})
    for name in options:
        if name not in flows:
            raise not_run(name, flows)
    return {
        name: make_process(name, problem, lr, options.get(name), optimizer, start_state) for name in flows
    }


def check_run_memory(problem: Problem, flows: Sequence[str]) -> None:
    """Refuse (``ConfigError``) a run that could not hold, besides its problem, each flow's iterate and
    the Lanczos basis that every sharpness measurement allocates: a floor of what it needs (the flows'
    own buffers come on top), which a problem too large for its device would only meet at step 0."""
    basis = min(MAX_ITER, problem.dim) + 1
    vectors = basis + len(flows)
    check_memory(
        vectors * problem.dim * problem.dtype.itemsize,
        problem.device,
        f"the run's {vectors} vectors of {problem.dim:.3g} parameters in {dtype_name(problem.dtype)} "
        f"(each flow's iterate and the sharpness measurement's Lanczos basis of {basis})",
        "use a smaller model" + (", or float32" if problem.dtype.itemsize > 4 else ""),
    )


def run_optimizer(config: dict) -> Optimizer:
    """The optimizer of a run's settings (GD for runs from before the optimizer layer)."""
    name = config.get("optimizer", DEFAULT_OPTIMIZER)
    return make_optimizer(name, config["lr"], config.get("optimizer_options"))


def _warm_start(
    problem: Problem, optimizer: Optimizer, w0: Tensor, steps: int
) -> tuple[Tensor, State | None]:
    """``steps`` plain optimizer steps from ``w0`` (the central-flows code's ``--warm-start``): the
    point and the optimizer state every flow starts from. None for the state without a warm start."""
    if steps == 0:
        return w0, None
    w, state = w0.clone(), optimizer.init(w0)
    for k in range(steps):
        g = problem.grad(w)
        state = optimizer.update(state, g)
        w = optimizer.step(w, g, state)
        if not bool(torch.isfinite(w).all()):
            raise ConfigError(f"the warm start diverged at step {k + 1} of {steps}; use a smaller η")
    return w, state


def _settings(
    problem, lr, steps, flows, record_every, sharpness_every, save_params, params_every, params_dtype, seed
) -> dict:
    # The library takes numbers only: text is the command line's, converted before it gets here.
    lr = learning_rate("lr", lr, text=False)
    steps = positive_int("steps", steps, at_most=MAX_STEPS, text=False)
    record_every = positive_int("record_every", record_every, text=False)
    sharpness_every = (
        record_every
        if sharpness_every is None
        else positive_int("sharpness_every", sharpness_every, text=False)
    )
    if sharpness_every % record_every:
        raise ConfigError(
            f"sharpness_every ({sharpness_every}) must be a multiple of record_every ({record_every})"
        )
    if isinstance(flows, str):
        flows = flows.split(",")
    flows = [f.strip() for f in flows]
    if not flows or not all(flows):
        raise ConfigError(f"no flows given ({flows!r}); valid choices: see `edgeflow list`")
    for name in flows:
        process_class(name)
    dupes = sorted({f for f in flows if flows.count(f) > 1})
    if dupes:
        raise ConfigError(f"flow {dupes[0]!r} is named more than once in {', '.join(flows)}")
    if not isinstance(save_params, bool):
        raise ConfigError(f"save_params must be true or false, got {save_params!r}")
    if params_dtype is not None and params_dtype not in PARAMS_DTYPES:
        raise ConfigError(f"unknown params_dtype {params_dtype!r}; valid choices: {', '.join(PARAMS_DTYPES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    return {
        "problem": problem.name,
        "lr": lr,
        "steps": steps,
        "flows": flows,
        "record_every": record_every,
        "sharpness_every": sharpness_every,
        "save_params": save_params,
        "params_every": positive_int("params_every", params_every, text=False),
        "params_dtype": params_dtype,
        "seed": seed,
        "dtype": str(problem.dtype).removeprefix("torch."),
        "device": str(problem.device),
        "dim": problem.dim,
        "recipe": problem.info.get("recipe"),
        "world_size": parallel.world_size(),
    }


def _plain(config: dict) -> dict:
    """The run's settings as plain JSON values: they go into results.h5 and the checkpoint (which
    loads only plain data)."""
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config must hold JSON values (numbers, strings, lists, dicts): {err}") from None


def _start_point(problem: Problem, w0: Tensor | None) -> Tensor:
    if w0 is None:
        return problem.w0
    w0 = torch.as_tensor(w0).to(dtype=problem.dtype, device=problem.device)
    if w0.shape != (problem.dim,):
        raise ConfigError(
            f"w0 must be a vector of the problem's {problem.dim} parameters, got shape {tuple(w0.shape)}"
        )
    if not torch.isfinite(w0).all():
        raise ConfigError("w0 has non-finite entries (NaN or inf)")
    return w0


def _rebuild_problem(config: dict, out: Path) -> Problem:
    recipe = config.get("recipe")
    if not recipe:
        raise ConfigError(
            f"the run in {out} used a problem built by hand ({config.get('problem')!r}); "
            "pass it again: ef.resume(out, problem=...)"
        )
    from edgeflow.zoo import make_problem

    device = config["device"]
    if parallel.active() and device.startswith("cuda"):  # each rank on its own GPU, as when it started
        device = f"cuda:{torch.cuda.current_device()}"
    return make_problem(
        recipe["name"],
        dtype=config["dtype"],
        device=device,
        seed=recipe["seed"],
        **recipe["params"],
    )


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session) ask the run to
    stop at the next step boundary (``signum`` holds the first that came); a second signal stops at
    once. Only the main thread can install signal handlers; elsewhere this does nothing and signals
    keep their usual effect."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping at the end of this step", signal.Signals(signum).name)


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


__all__ = [
    "Run",
    "RunInterrupted",
    "StopSignals",
    "check_resumable",
    "check_run_dir",
    "compare",
    "prepare_run_dir",
    "resume",
    "writing",
]
