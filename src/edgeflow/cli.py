"""Command line: ``edgeflow run | plot | list``."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import edgeflow
from edgeflow.errors import ConfigError
from edgeflow.metrics import summarize, summary_markdown
from edgeflow.processes import PROCESSES, option_names, process_class
from edgeflow.results import load
from edgeflow.runner import build_processes, compare
from edgeflow.utils import DTYPES, dtype_name, positive_float, positive_int
from edgeflow.zoo import DEFAULT_PROBLEM, PROBLEMS, make_problem, problem_params, problem_spec

# The modified flow is left out of the default set: near EoS it is stiff (rate ηλ(1 + ηλ/2) ≥ 4)
# and costs ~5× gradient flow per step on the default problem; run it with --flows.
DEFAULT_FLOWS = ("gd", "midpoint", "edge", "gradient")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit code 2), without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"edgeflow: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgeflow", description=edgeflow.__doc__)
    p.add_argument("--version", action="version", version=f"edgeflow {edgeflow.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run GD side by side with its continuous-time models")
    r.add_argument("--problem", default=DEFAULT_PROBLEM, help=f"named problem (default {DEFAULT_PROBLEM})")
    r.add_argument("--lr", help="learning rate η (default: the problem's)")
    r.add_argument("--steps", help="number of GD steps (default: the problem's)")
    r.add_argument("--flows", default=",".join(DEFAULT_FLOWS), help="comma-separated flows to run")
    r.add_argument("--out", help="run directory (default runs/<problem>-<time>)")
    r.add_argument("--seed", default="0", help="seed for data subsets, initialization and Lanczos")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
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
    r.add_argument("--save-params", action="store_true", help="store every flow's parameters per record")
    r.add_argument("--no-plots", action="store_true", help="skip the figures")
    r.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    pl = sub.add_parser("plot", help="(re)draw the figures of a run directory")
    pl.add_argument("run_dir", help="a directory written by `edgeflow run`")

    sub.add_parser("list", help="list the named problems and the flows")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(format="edgeflow: %(message)s", level=logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "plot": cmd_plot, "list": cmd_list}[args.command](args)
    except ConfigError as err:
        print(f"edgeflow: error: {err}", file=sys.stderr)
        return 2


def cmd_run(args: argparse.Namespace) -> int:
    spec = problem_spec(args.problem)
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    if not flows:
        raise ConfigError(f"--flows {args.flows!r} names no flow; valid choices: {', '.join(PROCESSES)}")
    for f in flows:
        process_class(f)
    lr = positive_float("--lr", args.lr if args.lr is not None else spec.lr)
    steps = positive_int("--steps", args.steps if args.steps is not None else spec.steps)
    record_every = positive_int(
        "--record-every", args.record_every if args.record_every is not None else spec.record_every
    )
    sharpness_every = positive_int(
        "--sharpness-every",
        args.sharpness_every
        if args.sharpness_every is not None
        else max(spec.sharpness_every // record_every, 1) * record_every,
    )
    if sharpness_every % record_every:
        raise ConfigError(
            f"--sharpness-every ({sharpness_every}) must be a multiple of --record-every ({record_every})"
        )
    seed = _int_arg("--seed", args.seed)
    options = parse_options(args.option)
    out = Path(args.out) if args.out else Path("runs") / f"{args.problem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "results.h5").exists() and not args.force:
        raise ConfigError(f"{out} already holds a run; choose another --out or pass --force")

    problem = make_problem(args.problem, dtype=args.dtype, device=args.device, seed=seed)
    build_processes(problem, lr, flows, options)  # bad options fail here, before any output
    print(
        f"edgeflow: {problem.name} (d = {problem.dim}, {dtype_name(problem.dtype)}, {problem.device}), "
        f"η = {lr:g} (2/η = {2 / lr:.4g}), {steps} steps, flows: {', '.join(flows)}",
        file=sys.stderr,
    )
    config = {
        "problem_params": problem_params(args.problem),
        "edgeflow_version": edgeflow.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    res = compare(
        problem,
        lr,
        steps,
        flows,
        record_every=record_every,
        sharpness_every=sharpness_every,
        save_params=args.save_params,
        seed=seed,
        options=options,
        progress=not args.quiet,
        config=config,
    )
    out.mkdir(parents=True, exist_ok=True)
    res.save(out / "results.h5")
    (out / "config.json").write_text(json.dumps(res.config, indent=2) + "\n")
    summary = summarize(res)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = summary_markdown(summary)
    (out / "summary.md").write_text(table)
    if not args.no_plots:
        from edgeflow.plots import plot_run

        plot_run(res, out / "figures")
    print(table)
    for name in res:
        k = res[name].info["diverged_at"]
        if k is not None:
            print(f"note: {name} diverged at step {k}; its records stop there.")
    print(f"results in {out}/ (results.h5, summary.md, config.json{'' if args.no_plots else ', figures/'})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    path = run_dir / "results.h5"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no results.h5; give a directory written by `edgeflow run`")
    from edgeflow.plots import plot_run

    for p in plot_run(load(path), run_dir / "figures"):
        print(p)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    print("problems (edgeflow run --problem NAME):")
    for name, spec in PROBLEMS.items():
        mark = " (default)" if name == DEFAULT_PROBLEM else ""
        print(f"  {name}{mark}: {spec.description}")
        params = ", ".join(f"{k}={v}" for k, v in problem_params(name).items())
        print(f"      lr={spec.lr:g} steps={spec.steps} dtype={spec.dtype}; {params}")
    print("flows (edgeflow run --flows a,b,...):")
    for name, cls in PROCESSES.items():
        opts = option_names(name)
        extra = f" [options: {', '.join(opts)}]" if opts else ""
        print(f"  {name}: {cls.description}{extra}")
    return 0


def parse_options(items: Sequence[str]) -> dict[str, dict]:
    """``["edge.substeps=4", "edge.magnitude=linear"]`` → ``{"edge": {"substeps": 4, ...}}``."""
    options: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        flow, dot, name = key.partition(".")
        if not (sep and dot and flow and name):
            raise ConfigError(f"--option {item!r} is not of the form FLOW.KEY=VALUE (e.g. edge.substeps=4)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(flow.strip(), {})[name.strip()] = value
    return options


def _int_arg(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


if __name__ == "__main__":
    sys.exit(main())
