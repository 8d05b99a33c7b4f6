"""Command line: ``edgeflow run | plot | sweep | list``."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import edgeflow
from edgeflow import catalog, threads
from edgeflow.config import DEFAULT_FLOWS, RunConfig, load_toml
from edgeflow.errors import ConfigError, StorageError
from edgeflow.rundir import CHECKPOINT, RESULTS, check_resumable, check_run_dir
from edgeflow.utils import DTYPES, MAX_STEPS, dtype_name, learning_rate, parse_lrs, positive_int, seed_int

# Only light modules are imported here: torch (seconds), h5py, the flows and the zoo are imported by
# the commands that compute, after the flags that can be checked without them have been.

#: the defaults of ``RunConfig`` (``edgeflow.zoo.DEFAULT_PROBLEM`` and ``edgeflow.optimizers.DEFAULT``)
DEFAULT_PROBLEM = RunConfig.problem
DEFAULT_OPTIMIZER = RunConfig.optimizer

PROBLEM_HELP = (
    f"named problem (default {DEFAULT_PROBLEM}; `edgeflow list` shows them) or package.module:function, "
    "a factory of your own; its module may be a file in the current directory (no PYTHONPATH needed)"
)

THREADS_HELP = (
    "torch's threads: N, or auto (the default: 1 below 100,000 parameters, else the idle physical "
    "cores; OMP_NUM_THREADS, when set, is kept)"
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit code 2), without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"edgeflow: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgeflow", description=edgeflow.__doc__)
    p.add_argument("--version", action="version", version=f"edgeflow {edgeflow.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser(
        "run",
        help="run GD side by side with its continuous-time models",
        description="Settings come from the defaults, then --config FILE, then these flags.",
    )
    r.add_argument("--config", metavar="FILE", help="a TOML file of settings (flags override it)")
    r.add_argument("--problem", help=PROBLEM_HELP)
    r.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a problem parameter, e.g. n=256 (repeatable; `edgeflow list` shows each problem's)",
    )
    r.add_argument("--download", action="store_true", help="let the problem download its dataset")
    r.add_argument("--lr", help="learning rate η (default: the problem's, for the optimizer)")
    add_optimizer_arguments(r, "the optimizer GD's process runs and every model models", "every flow")
    r.add_argument("--steps", help="number of GD steps (default: the problem's)")
    r.add_argument("--flows", help=f"comma-separated flows to run (default {','.join(DEFAULT_FLOWS)})")
    r.add_argument("--out", help="run directory (default runs/<problem>-<time>)")
    r.add_argument("--seed", help="seed for data subsets, initialization and Lanczos (default 0)")
    r.add_argument("--device", help="cpu (default), cuda, cuda:N or mps")
    r.add_argument("--dtype", help=f"{' or '.join(DTYPES)} (default: the problem's)")
    r.add_argument("--record-every", help="record every N steps (default: the problem's)")
    r.add_argument("--sharpness-every", help="measure sharpness every N steps (multiple of --record-every)")
    r.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="FLOW.KEY=VALUE",
        help="a flow option, e.g. edge.substeps=4 (repeatable; `edgeflow list` shows each flow's options)",
    )
    r.add_argument("--save-params", action="store_true", default=None, help="store parameters per record")
    r.add_argument("--params-every", help="with --save-params: store them every N records (default 1)")
    r.add_argument("--params-dtype", help="with --save-params: float32 or float64 (default: the problem's)")
    r.add_argument("--no-plots", action="store_true", help="skip the figures")
    r.add_argument(
        "--force", action="store_true", help="empty and reuse a directory that holds an earlier run"
    )
    r.add_argument(
        "--flush-every", help="append records to results.h5 every N records (default 20; at least every 30 s)"
    )
    r.add_argument(
        "--checkpoint-every",
        help="checkpoint every N steps (default: every 60 s, and on SIGINT/SIGTERM/SIGHUP)",
    )
    r.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted or killed run in DIR from its last checkpoint",
    )
    r.add_argument("--threads", help=THREADS_HELP)
    r.add_argument("--quiet", action="store_true", help="no progress bar (also off when not on a terminal)")

    pl = sub.add_parser("plot", help="(re)draw the figures of a run directory")
    pl.add_argument("run_dir", help="a directory written by `edgeflow run` (or its results.h5)")

    sub.add_parser("list", help="named problems and flows: each parameter and option, its type and default")

    sw = sub.add_parser(
        "sweep",
        help="GD (or --optimizer) at several learning rates from one initialization: sharpness against "
        "2/η (λ₁(P⁻¹H)/η against threshold/η), final loss",
        description="Runs GD (or --optimizer) and its midpoints at each η into DIR/lr-<η>/, then writes "
        "sweep.png, sweep.md and sweep.json into DIR.",
    )
    sw.add_argument("--problem", default=DEFAULT_PROBLEM, help=PROBLEM_HELP)
    sw.add_argument("--lrs", help="comma-separated learning rates, e.g. 0.05,0.1,0.2 (required)")
    sw.add_argument("--steps", help="number of optimizer steps per η (default: the problem's)")
    add_optimizer_arguments(sw, "the optimizer run at each η", "each η's run")
    sw.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a problem parameter (repeatable)"
    )
    sw.add_argument("--seed", help="seed for data subsets, initialization and Lanczos (default 0)")
    sw.add_argument("--dtype", help=f"{' or '.join(DTYPES)} (default: the problem's)")
    sw.add_argument("--device", help="cpu (default), cuda, cuda:N or mps")
    sw.add_argument("--sharpness-every", help="measure sharpness every N steps (default: the problem's)")
    sw.add_argument("--out", help="sweep directory (default runs/sweep-<problem>-<time>)")
    sw.add_argument(
        "--force", action="store_true", help="empty and reuse a directory that holds an earlier sweep"
    )
    sw.add_argument(
        "--resume",
        metavar="DIR",
        help="finish the interrupted or killed sweep in DIR (each η from its own checkpoint)",
    )
    sw.add_argument("--threads", help=THREADS_HELP)
    sw.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def add_optimizer_arguments(parser: argparse.ArgumentParser, runs: str, starts: str) -> None:
    """``--optimizer``, ``--opt`` and ``--warm-start``, the same for ``run`` and ``sweep``."""
    parser.add_argument(
        "--optimizer", help=f"{runs} (`edgeflow list` shows them; default {DEFAULT_OPTIMIZER})"
    )
    parser.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an optimizer hyper-parameter, e.g. beta2=0.99 (repeatable; `edgeflow list` shows them)",
    )
    parser.add_argument(
        "--warm-start",
        help=f"plain optimizer steps from the initialization before {starts} starts (default 0)",
    )


def parse_opt(items: Sequence[str]) -> dict:
    """``--opt`` pairs as the optimizer's options."""
    return parse_pairs(items, "--opt", "KEY=VALUE (e.g. beta2=0.99)")


def main(argv: Sequence[str] | None = None) -> int:
    # Under torchrun every rank runs this; rank 0 speaks for all of them.
    speaks = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(format="edgeflow: %(message)s", level=logging.INFO if speaks else logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        code = {"run": cmd_run, "plot": cmd_plot, "list": cmd_list, "sweep": cmd_sweep}[args.command](args)
    except ConfigError as err:
        if speaks:
            print(f"edgeflow: error: {err}", file=sys.stderr)
        code = 2
    except Exception as err:
        parallel = _parallel()
        if parallel is None or not isinstance(err, parallel.DistributedError):
            raise
        print(f"edgeflow: error: {err}", file=sys.stderr)
        parallel.leave(together=False)
        return 1
    parallel = _parallel()
    try:
        if parallel is not None:
            parallel.leave()
    except parallel.DistributedError as err:
        print(f"edgeflow: error: {err}", file=sys.stderr)
        return 1
    return code


def _parallel():
    """``edgeflow.distributed`` once a command has imported it (with torch); None before, when there
    is no process group to leave."""
    return sys.modules.get("edgeflow.distributed")


def run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--config``, then the flags that were given."""
    flags: dict = {
        key: getattr(args, key)
        for key in (
            "problem",
            "lr",
            "steps",
            "flows",
            "out",
            "device",
            "dtype",
            "save_params",
            "optimizer",
            "threads",
        )
        if getattr(args, key) is not None
    }
    for key in (
        "seed",
        "record_every",
        "sharpness_every",
        "flush_every",
        "checkpoint_every",
        "params_every",
        "warm_start",
    ):
        if getattr(args, key) is not None:
            flags[key] = _int_arg("--" + key.replace("_", "-"), getattr(args, key))
    if args.params_dtype is not None:
        flags["params_dtype"] = args.params_dtype
    if args.no_plots:
        flags["plots"] = False
    params = parse_pairs(args.param, "--param", "KEY=VALUE (e.g. n=256)")
    if args.download:
        params["download"] = True
    if params:
        flags["params"] = params
    if args.option:
        flags["options"] = parse_options(args.option)
    if args.opt:
        flags["optimizer_options"] = parse_opt(args.opt)
    layers = [load_toml(args.config)] if args.config else []
    return RunConfig.merged(*layers, flags)


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume:
        return resume_run(args)
    cfg = run_config(args)
    requested_threads = threads.request(cfg.threads)
    # What can be checked without torch first: a mistyped number answers at once.
    numbers = (("lr", learning_rate), ("steps", functools.partial(positive_int, at_most=MAX_STEPS)))
    numbers += tuple((key, positive_int) for key in ("record_every", "sharpness_every", "checkpoint_every"))
    numbers += (("flush_every", positive_int), ("params_every", positive_int))
    for key, check in numbers:
        if getattr(cfg, key) is not None:
            check("--" + key.replace("_", "-"), getattr(cfg, key))
    catalog.check_problem(cfg.problem, cfg.params)
    catalog.check_flows(cfg.flows, cfg.options)
    catalog.check_optimizer(cfg.optimizer, cfg.optimizer_options)
    if cfg.out:
        check_run_dir(cfg.out, args.force)

    import torch

    from edgeflow import distributed as parallel
    from edgeflow.optimizers import make_optimizer
    from edgeflow.runner import build_processes, compare, writing
    from edgeflow.zoo import make_problem, problem_params, problem_spec

    cfg.device = parallel.init_from_env(cfg.device)
    custom = catalog.is_factory(cfg.problem)
    spec = None if custom else problem_spec(cfg.problem)
    for key, name in (("lr", "--lr"), ("steps", "--steps")):
        if getattr(cfg, key) is None and spec is None:
            raise ConfigError(f"{name} is required with a custom problem factory ({cfg.problem})")
    lr = learning_rate("--lr", cfg.lr if cfg.lr is not None else spec.lr_for(cfg.optimizer))
    steps = positive_int("--steps", cfg.steps if cfg.steps is not None else spec.steps, at_most=MAX_STEPS)
    spec_every = (spec.record_every, spec.sharpness_every) if spec else (1, 1)
    record_every = positive_int(
        "--record-every", cfg.record_every if cfg.record_every is not None else spec_every[0]
    )
    default_every = max(spec_every[1] // record_every, 1) * record_every
    sharpness_every = positive_int(
        "--sharpness-every", cfg.sharpness_every if cfg.sharpness_every is not None else default_every
    )
    if sharpness_every % record_every:
        raise ConfigError(
            f"--sharpness-every ({sharpness_every}) must be a multiple of --record-every ({record_every})"
        )
    default_out = _default_out("", cfg.problem)
    out = Path(cfg.out) if cfg.out else parallel.on_main(lambda: default_out)  # one name for all ranks

    # Held from before the data are loaded to the summary (rank 0 owns the directory); a second
    # writer stops here, and a run that fails before writing anything leaves no directory.
    check = functools.partial(parallel.on_main, lambda: check_run_dir(out, args.force), share=False)
    check()
    with writing(out, "edgeflow run", create=True):
        check()  # again, now that no other writer can change the directory
        problem = make_problem(cfg.problem, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed, **cfg.params)
        n_threads = threads.use(requested_threads, problem.dim)
        optimizer = make_optimizer(cfg.optimizer, lr, cfg.optimizer_options)
        warm_start = (
            _int_arg("--warm-start", cfg.warm_start) if isinstance(cfg.warm_start, str) else cfg.warm_start
        )
        # bad options, or a flow not defined for the optimizer, fail here, before any output
        build_processes(problem, lr, cfg.flows, cfg.options, optimizer)
        ranks = f", {parallel.world_size()} processes" if parallel.active() else ""
        if optimizer.stateless:
            rule = f"η = {lr:g} (2/η = {2 / lr:.4g})"
        else:
            hyper = ", ".join(f"{k}={v}" for k, v in optimizer.options().items())
            rule = f"{optimizer.name} ({hyper}), η = {lr:g}, threshold {optimizer.threshold:g} on λ₁(P⁻¹H)"
        say(
            f"edgeflow: {problem.name} (d = {problem.dim}, {dtype_name(problem.dtype)}, "
            f"{problem.device}{ranks}, {n_threads} thread{'s' * (n_threads > 1)}), {rule}, {steps} steps, "
            f"flows: {', '.join(cfg.flows)}"
        )
        resolved = RunConfig.merged(
            asdict(cfg),
            {
                "lr": lr,
                "steps": steps,
                "dtype": dtype_name(problem.dtype),
                "record_every": record_every,
                "sharpness_every": sharpness_every,
                "params": cfg.params if custom else {**problem_params(cfg.problem), **cfg.params},
                "warm_start": warm_start,
                "optimizer_options": optimizer.options(),
            },
        )
        # The saved settings leave `out` unset, so `--config DIR/config.toml` repeats the run elsewhere.
        resolved.out = None
        config = {
            "problem_params": resolved.params,
            "plots": cfg.plots,
            "edgeflow_version": edgeflow.__version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "threads": n_threads,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        run = functools.partial(
            compare,
            problem,
            lr,
            steps,
            cfg.flows,
            record_every=record_every,
            sharpness_every=sharpness_every,
            save_params=cfg.save_params,
            params_every=cfg.params_every,
            params_dtype=cfg.params_dtype,
            seed=cfg.seed,
            options=cfg.options,
            optimizer=optimizer.name,
            optimizer_options=optimizer.options(),
            warm_start=warm_start,
            config=config,
            out=out,
            force=args.force,
            files={"config.toml": resolved.to_toml()},
            load_result=False,
            checkpoint_every=cfg.checkpoint_every,
            flush_every=cfg.flush_every,
        )
        return _run_and_report(run, out, cfg, args.quiet)


#: flags that change what is computed: a resumed run keeps its own
_SETTINGS = ("config", "problem", "lr", "steps", "flows", "out", "seed", "device", "dtype", "record_every")
_SETTINGS += ("sharpness_every", "save_params", "params_every", "params_dtype", "optimizer", "warm_start")


def resume_run(args: argparse.Namespace) -> int:
    """``edgeflow run --resume DIR``: the run's own settings, only output flags may be added."""
    given = [f"--{key.replace('_', '-')}" for key in _SETTINGS if getattr(args, key) is not None]
    given += [
        flag
        for flag, used in (("--param", args.param), ("--option", args.option), ("--opt", args.opt))
        if used
    ]
    given += [flag for flag, used in (("--download", args.download), ("--force", args.force)) if used]
    if given:
        raise ConfigError(
            f"--resume continues a run with its saved settings; remove {', '.join(given)} "
            "(only --quiet, --no-plots, --flush-every, --checkpoint-every and --threads may be given)"
        )
    out = Path(args.resume)
    if out.is_dir() and not (out / CHECKPOINT).exists() and (out / RESULTS).exists():
        from edgeflow.results import load

        if load(out, params=False).complete:
            raise ConfigError(f"the run in {out} is complete; there is nothing to resume")
    check_resumable(out)
    from edgeflow import distributed as parallel
    from edgeflow.runner import resume, writing

    cfg = RunConfig.merged(load_toml(out / "config.toml")) if (out / "config.toml").is_file() else RunConfig()
    parallel.init_from_env(cfg.device)  # a data-parallel run resumes data-parallel, on its device kind
    # The run's own thread count by default: the bits of a sum can depend on how it is split.
    try:
        recorded = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        recorded = {}
    given = args.threads if args.threads is not None else recorded.get("threads")
    threads.use(threads.request(given), int(recorded.get("dim") or 0))
    if args.no_plots:
        cfg.plots = False
    flags = {"flush_every": args.flush_every, "checkpoint_every": args.checkpoint_every}
    checked = {k: _int_arg(f"--{k.replace('_', '-')}", v) for k, v in flags.items() if v is not None}
    run = functools.partial(
        resume,
        out,
        flush_every=checked.get("flush_every", cfg.flush_every),
        checkpoint_every=checked.get("checkpoint_every", cfg.checkpoint_every),
        load_result=False,
    )
    with writing(out, "edgeflow run --resume"):
        return _run_and_report(run, out, cfg, args.quiet)


def _run_and_report(run: Callable[..., object], out: Path, cfg: RunConfig, quiet: bool) -> int:
    """Run to the end, or to an interrupt; either way write the summary and figures of what ran."""
    from edgeflow import distributed as parallel
    from edgeflow.runner import RunInterrupted

    interrupted: RunInterrupted | None = None
    try:
        run(progress=not quiet)
    except RunInterrupted as stop:
        interrupted = stop
    except StorageError as err:
        step = getattr(err, "checkpoint_step", None)
        kept = (
            f"the records written so far and the checkpoint of step {step} are kept; once it can be "
            f"written again: edgeflow run --resume {out}"
            if step is not None
            else "the run stopped before its first checkpoint; once it can be written again, start it "
            "anew with --force"
        )
        say(f"edgeflow: error: {err}; {kept}")
        return 1
    except KeyboardInterrupt:
        say(
            "edgeflow: stopped at once (second interrupt); the last checkpoint is kept: "
            f"edgeflow run --resume {out}"
        )
        return 130
    if parallel.is_main():
        try:
            report(out, cfg.plots)
        except (OSError, StorageError) as err:
            cause = err.strerror if isinstance(err, OSError) else err.cause
            where = getattr(err, "filename", None) or getattr(err, "path", out)
            say(f"edgeflow: error: cannot write {where}: {cause}; the records in {out / RESULTS} are kept")
            return 1
    if interrupted is not None:
        say(f"edgeflow: interrupted at step {interrupted.step}; resume with: edgeflow run --resume {out}")
        return interrupted.exit_code
    return 0


def _default_out(prefix: str, problem: str) -> Path:
    """``runs/<prefix><problem>-<time>``, the problem name made safe for a directory."""
    stem = problem.replace(":", "-").replace(".", "-")
    return Path("runs") / f"{prefix}{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def say(line: str) -> None:
    """One line on stderr, from rank 0 only in a data-parallel run."""
    parallel = _parallel()
    if parallel is None or parallel.is_main():
        print(line, file=sys.stderr)


def report(out: Path, plots: bool) -> None:
    """summary.json, summary.md and the figures of the run in ``out``; prints the summary."""
    from edgeflow.metrics import summarize, summary_markdown
    from edgeflow.results import load

    res = load(out, params=False)
    summary = summarize(res)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = summary_markdown(summary)
    (out / "summary.md").write_text(table)
    if plots:
        from edgeflow.plots import plot_run

        plot_run(res, out / "figures")
    print(table)
    figures = ", figures/" if plots else ""
    print(f"results in {out}/ (results.h5, summary.md, config.toml, config.json{figures})")


def cmd_plot(args: argparse.Namespace) -> int:
    """Figures of a run directory (or of its results.h5), also of a run that is still going."""
    target = Path(args.run_dir)
    run_dir = target.parent if target.is_file() else target
    if not target.is_file() and not (target / "results.h5").is_file():
        raise ConfigError(f"{target} has no results.h5; give a directory written by `edgeflow run`")
    from edgeflow.plots import plot_run
    from edgeflow.results import load

    res = load(target, params=False)
    try:
        for p in plot_run(res, run_dir / "figures"):
            print(p)
    except OSError as err:
        raise ConfigError(
            f"cannot write {err.filename or run_dir / 'figures'}: {err.strerror or err}"
        ) from None
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``edgeflow sweep``: flags checked here with their names, then ``edgeflow.sweep.sweep``."""
    if args.resume:
        flags = [k for k in _SWEEP_SETTINGS if getattr(args, k) not in (None, [], False)]
        given = [f"--{k.replace('_', '-')}" for k in flags]
        given += ["--problem"] if args.problem != DEFAULT_PROBLEM else []
        if given:
            raise ConfigError(
                f"sweep --resume continues a sweep with its saved settings; remove {', '.join(given)} "
                "(only --quiet and --threads may be given)"
            )
        from edgeflow.sweep import resume_sweep

        run = functools.partial(resume_sweep, args.resume, threads=threads.request(args.threads))
        return _sweep_and_report(run, Path(args.resume), args.quiet)
    if args.lrs is None:
        raise ConfigError("sweep needs --lrs (e.g. --lrs 0.05,0.1,0.2), or --resume DIR")
    lrs = parse_lrs(args.lrs, "--lrs")
    steps = None if args.steps is None else positive_int("--steps", args.steps, at_most=MAX_STEPS)
    every = None if args.sharpness_every is None else positive_int("--sharpness-every", args.sharpness_every)
    seed = 0 if args.seed is None else seed_int("--seed", _int_arg("--seed", args.seed))
    params = parse_pairs(args.param, "--param", "KEY=VALUE (e.g. n=256)")
    optimizer = args.optimizer if args.optimizer is not None else DEFAULT_OPTIMIZER
    optimizer_options = parse_opt(args.opt)
    warm_start = 0 if args.warm_start is None else _int_arg("--warm-start", args.warm_start)
    requested_threads = threads.request(args.threads)
    catalog.check_problem(args.problem, params)
    catalog.check_optimizer(optimizer, optimizer_options)
    if steps is None and catalog.is_factory(args.problem):
        raise ConfigError(f"--steps is required with a custom problem factory ({args.problem})")
    from edgeflow.sweep import sweep

    out = Path(args.out) if args.out else _default_out("sweep-", args.problem)
    run = functools.partial(
        sweep,
        args.problem,
        lrs,
        steps,
        out=out,
        sharpness_every=every,
        seed=seed,
        params=params,
        dtype=args.dtype,
        device=args.device,
        force=args.force,
        threads=requested_threads,
        optimizer=optimizer,
        optimizer_options=optimizer_options,
        warm_start=warm_start,
    )
    return _sweep_and_report(run, out, args.quiet)


#: flags that set what a sweep computes: a resumed sweep keeps its own
_SWEEP_SETTINGS = ("lrs", "steps", "param", "seed", "dtype", "device", "sharpness_every", "out", "force")
_SWEEP_SETTINGS += ("optimizer", "opt", "warm_start")


def _sweep_and_report(run: Callable[..., object], out: Path, quiet: bool) -> int:
    from edgeflow.runner import RunInterrupted

    try:
        result = run(progress=not quiet, say=say)
    except RunInterrupted as stop:
        say(
            f"edgeflow: sweep interrupted in {stop.out} at step {stop.step}, before its table and "
            f"figure; the runs of the smaller η are complete; continue the sweep with: "
            f"edgeflow sweep --resume {out}"
        )
        return stop.exit_code
    print(result.markdown(), end="")
    print(f"results in {out}/ (sweep.png, sweep.md, sweep.json, one run directory lr-<η>/ per η)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Named problems, flows and optimizers, each parameter and option with its type and default,
    from ``edgeflow.catalog`` (the registries' signatures, read without importing torch)."""
    entries = catalog.load()
    print("problems (edgeflow run --problem NAME --param KEY=VALUE ...):")
    for name, entry in entries["problems"].items():
        mark = " (default)" if name == DEFAULT_PROBLEM else ""
        print(_described(f"{name}{mark}", entry["description"]))
        settings = entry["settings"]
        print(
            f"      lr={settings['lr']:g} steps={settings['steps']} dtype={settings['dtype']} "
            f"record_every={settings['record_every']} sharpness_every={settings['sharpness_every']}"
        )
        print(_parameters("params", entry["params"]))
    print("flows (edgeflow run --flows a,b,... --option FLOW.KEY=VALUE ...):")
    for name, entry in entries["flows"].items():
        print(_described(name, entry["description"]))
        print(_parameters("options", entry["options"]))
    print("optimizers (edgeflow run --optimizer NAME --opt KEY=VALUE ...):")
    for name, entry in entries["optimizers"].items():
        mark = " (default)" if name == DEFAULT_OPTIMIZER else ""
        print(_described(f"{name}{mark}", entry["description"]))
        print(_parameters("options", entry["options"]))
    print("A VALUE is read as JSON where it parses (true, 3, 0.5, null), else as a string.")
    return 0


LIST_WIDTH = 100


def _described(name: str, description: str) -> str:
    return textwrap.fill(
        f"{name}: {description}",
        width=LIST_WIDTH,
        initial_indent="  ",
        subsequent_indent="      ",
        break_on_hyphens=False,
    )


def _parameters(label: str, typed: dict[str, list[str]]) -> str:
    """``label: KEY=DEFAULT (type), ...`` wrapped at LIST_WIDTH; an item is never split across
    lines (a type like ``int | None`` stays whole)."""
    items = [f"{key}={default} ({kind})" for key, (default, kind) in typed.items()] or ["none"]
    prefix = f"      {label}: "
    lines = [prefix]
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(lines[-1]) + len(piece) > LIST_WIDTH and len(lines[-1]) > len(prefix):
            lines.append(" " * len(prefix))
        lines[-1] += piece + " "
    return "\n".join(line.rstrip() for line in lines)


def parse_options(items: Sequence[str]) -> dict[str, dict]:
    """``["edge.substeps=4", "edge.magnitude=linear"]`` → ``{"edge": {"substeps": 4, ...}}``."""
    options: dict[str, dict] = {}
    for key, value in parse_pairs(items, "--option", "FLOW.KEY=VALUE (e.g. edge.substeps=4)").items():
        flow, dot, name = key.partition(".")
        if not (dot and flow and name):
            raise ConfigError(f"--option {key!r} is not of the form FLOW.KEY=VALUE (e.g. edge.substeps=4)")
        options.setdefault(flow.strip(), {})[name.strip()] = value
    return options


def parse_pairs(items: Sequence[str], flag: str, form: str) -> dict:
    """``["n=256", "loss=ce"]`` → ``{"n": 256, "loss": "ce"}``; values are JSON where they parse."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not (sep and key.strip()):
            raise ConfigError(f"{flag} {item!r} is not of the form {form}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def _int_arg(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


if __name__ == "__main__":
    sys.exit(main())
