"""Cost per unit of simulated time (one GD step) of each process, relative to GD, on the default
problem at the edge of stability. Measured in one process, interleaved, median over repeats.

    python benchmarks/cost.py [--problem P] [--param n=256] [--device cuda] [--steps 40] [--repeats 5]
                              [--warmup-steps 300] [--only gd,edge] [--json]
                              [--optimizer gd,rmsprop --opt beta2=0.99] [--threads 1]

Wall time excludes measurements (sharpness, records): only ``Process.step`` is timed. Evaluation
counts come from the oracle's counters. Gradient and modified flow pick their RK4 sub-steps from
the sharpness, so their cost depends on where they run: all processes start from GD's iterate at
``--warmup-steps`` (inside EoS on the default problem). With ``--optimizer`` the warm-up steps are
that optimizer's (its state carried into every process), the rows are that optimizer's models
(variants defined for GD only are left out), and "GD" in the ratios is the discrete optimizer.
Several optimizers (``--optimizer gd,rmsprop``) are timed interleaved in one process, each from its
own warm-up, and each variant's wall time per step is also reported against the first optimizer's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import edgeflow as ef
from edgeflow.cli import parse_pairs
from edgeflow.errors import ConfigError
from edgeflow.optimizers import Optimizer, State, make_optimizer
from edgeflow.processes import make_process

VARIANTS: list[tuple[str, str, dict]] = [
    ("gd", "gd", {}),
    ("edge (default: K = 2; 1 with a momentum)", "edge", {}),
    ("edge K = 1", "edge", {"substeps": 1}),
    ("edge K = 4", "edge", {"substeps": 4}),
    ("edge K = 2, hvp = pair", "edge", {"hvp": "pair"}),
    ("edge K = 1, hvp = pair", "edge", {"substeps": 1, "hvp": "pair"}),
    (
        "edge K = 1, hvp = pair, implicit = secant",
        "edge",
        {"substeps": 1, "hvp": "pair", "implicit": "secant"},
    ),
    ("edge K = 1, implicit = secant", "edge", {"substeps": 1, "implicit": "secant"}),
    ("edge K = 4, hvp = pair", "edge", {"substeps": 4, "hvp": "pair"}),
    ("edge K = 2, hvp = pair+center", "edge", {"hvp": "pair+center"}),
    ("edge K = 4, hvp = pair+center", "edge", {"substeps": 4, "hvp": "pair+center"}),
    ("gradient", "gradient", {}),
    ("modified", "modified", {}),
    ("central (default K = 4)", "central", {}),
    ("central K = 2", "central", {"substeps": 2}),
]


def _sync(problem: ef.Problem) -> None:
    if problem.device.type == "cuda":
        torch.cuda.synchronize(problem.device)


def time_steps(
    problem: ef.Problem,
    optimizer: Optimizer,
    flow: str,
    options: dict,
    w: torch.Tensor,
    steps: int,
    state: State | None = None,
):
    proc = make_process(flow, problem, optimizer.lr, options, optimizer, state)
    proc.init(w, seed=0)
    before = problem.counts.copy()
    _sync(problem)
    t0 = time.perf_counter()
    for _ in range(steps):
        proc.step()
    _sync(problem)  # GPU kernels run asynchronously: wait for them before reading the clock
    wall = time.perf_counter() - t0
    used = problem.counts - before
    return wall / steps, used.grad / steps, used.hvp / steps, used.third / steps


def prepare(problem: ef.Problem, spec, name: str, args, opts: dict, variants: list) -> tuple:
    """The optimizer, the point and state its warm-up steps reach, and the variants that model it."""
    lr = args.lr if args.lr is not None else spec.lr_for(name)
    optimizer = make_optimizer(name, lr, opts)
    w = problem.w0.clone()
    if optimizer.stateless:
        for _ in range(args.warmup_steps):
            w = w - lr * problem.grad(w)
        return optimizer, w, None, variants
    state = optimizer.init(w)
    for _ in range(args.warmup_steps):
        g = problem.grad(w)
        state = optimizer.update(state, g)
        w = optimizer.step(w, g, state)
    kept = []
    for variant in variants:
        try:
            make_process(variant[1], problem, lr, variant[2], optimizer, state)
            kept.append(variant)
        except ConfigError:  # a flow or option derived for GD only
            pass
    return optimizer, w, state, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="digits-mlp")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup-steps", type=int, default=300)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: ratios need a pinned count)"
    )
    ap.add_argument("--only", help="comma-separated process labels' flows to time (gd is always timed)")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="problem parameter")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument(
        "--optimizer",
        default="gd",
        help="the optimizer the processes model (default gd); several, comma-separated, are timed "
        "interleaved in this process and each one's Edge Flow is compared with the first one's",
    )
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="optimizer option")
    ap.add_argument("--lr", type=float, help="learning rate (default: the problem's for each optimizer)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = VARIANTS
    if args.only:
        keep = {"gd", *args.only.split(",")}
        variants = [v for v in VARIANTS if v[1] in keep]

    spec = ef.PROBLEMS[args.problem]
    params = parse_pairs(args.param, "--param", "KEY=VALUE")
    problem = ef.make_problem(args.problem, dtype=args.dtype, device=args.device, **params)
    opts = parse_pairs(args.opt, "--opt", "KEY=VALUE")
    names = [n.strip() for n in args.optimizer.split(",") if n.strip()]
    setups = {
        name: prepare(problem, spec, name, args, opts if name != "gd" else {}, variants) for name in names
    }

    samples: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for _ in range(args.repeats):
        for name, (optimizer, w, state, kept) in setups.items():
            for label, flow, options in kept:
                timed = time_steps(problem, optimizer, flow, options, w, args.steps, state)
                samples.setdefault((name, label), []).append(timed)

    results = []
    for name, (optimizer, _, _, kept) in setups.items():
        gd_wall = statistics.median(s[0] for s in samples[(name, "gd")])
        rows = []
        for label, flow, options in kept:
            runs = samples[(name, label)]
            wall = statistics.median(s[0] for s in runs)
            rows.append(
                {
                    "process": label,
                    "flow": flow,
                    "options": options,
                    "wall_per_step_ms": 1e3 * wall,
                    "wall_vs_gd": wall / gd_wall,
                    "grads_per_step": statistics.median(s[1] for s in runs),
                    "hvps_per_step": statistics.median(s[2] for s in runs),
                    "thirds_per_step": statistics.median(s[3] for s in runs),
                }
            )
        meta = {
            "problem": args.problem,
            "optimizer": optimizer.name,
            "optimizer_options": optimizer.options(),
            "lr": optimizer.lr,
            "dim": problem.dim,
            "dtype": str(problem.dtype).removeprefix("torch."),
            "device": str(problem.device),
            "start_step": args.warmup_steps,
            "steps": args.steps,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
        }
        results.append({"meta": meta, "rows": rows})
    # Edge Flow's wall time per step under each optimizer against the first one's, all in this process
    first = names[0]
    against = {
        name: {
            label: statistics.median(s[0] for s in samples[(name, label)])
            / statistics.median(s[0] for s in samples[(first, label)])
            for label, _, _ in setups[name][3]
            if (first, label) in samples and label != "gd"
        }
        for name in names[1:]
    }
    if args.json:
        print(json.dumps({"runs": results, f"wall_vs_{first}": against}, indent=2))
        return
    for item in results:
        meta = item["meta"]
        print(
            f"{meta['problem']} (d = {meta['dim']}, {meta['dtype']}, {meta['device']}), {meta['optimizer']}, "
            f"η = {meta['lr']:g}, from step {meta['start_step']}, {meta['steps']} steps × {meta['repeats']} "
            f"repeats (medians), {meta['torch_threads']} torch thread(s)\n"
        )
        print("| process | wall / step (ms) | wall vs GD | grads / step | HVPs / step | 3rd derivs / step |")
        print("|---|---|---|---|---|---|")
        for r in item["rows"]:
            print(
                f"| {r['process']} | {r['wall_per_step_ms']:.2f} | {r['wall_vs_gd']:.2f} | "
                f"{r['grads_per_step']:.3g} | {r['hvps_per_step']:.3g} | {r['thirds_per_step']:.3g} |"
            )
        print()
    for name, ratios in against.items():
        print(f"wall per step with {name} / with {first}, same process (medians):")
        for label, ratio in ratios.items():
            print(f"- {label}: {ratio:.2f}×")


if __name__ == "__main__":
    main()
