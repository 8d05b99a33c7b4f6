"""Strong scaling of data-parallel runs: the same full-batch problem on 1 and on N processes
(torch.distributed, gloo on the CPU / NCCL on GPUs), same machine, measured in one invocation.

    python benchmarks/scaling.py [--nproc 2] [--problem mnist5k-cnn] [--param n=1000] [--device cpu]
                                 [--steps 6] [--repeats 3] [--json]

Each configuration runs in fresh processes: 1 process, then N processes under torchrun, each
process with ``--threads`` intra-op threads (default: the cores divided by N), and for reference 1
process with N times the threads (the same cores used by intra-op parallelism instead). Timed per GD
step, per Edge Flow step (default options) and per HVP, median over repeats; efficiency =
t₁ / (N · t_N). Also prints the evaluations per GD step of each flow (measured) and the bytes they
all-reduce (the oracle sums every evaluation over ranks in one all-reduce of d floats).

    python benchmarks/scaling.py --estimate [--gpus 8] [--tflops 20] [--bandwidth 100] [--latency 30]

prints a model-based ESTIMATE (nothing is timed) of the parallel efficiency of each flow on full
CIFAR-10 (50,000 images) with the ResNet of ``cifar10-resnet``: forward FLOPs per image are counted
by ``torch.utils.flop_counter`` on the CPU, a gradient costs 3 forwards, an HVP 2 gradients, a third
derivative 3; compute is split evenly over the GPUs at ``--tflops`` sustained per GPU; every
evaluation is one ring all-reduce of d float32 (2(N−1)/N · 4d bytes at ``--bandwidth`` GB/s bus
bandwidth plus ``--latency`` µs), not overlapped with compute, as edgeflow runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER_FLAG = "--worker"


def worker(args: argparse.Namespace) -> None:
    import torch

    import edgeflow as ef
    from edgeflow import distributed as parallel
    from edgeflow.cli import parse_pairs
    from edgeflow.processes import make_process

    torch.set_num_threads(args.threads)
    device = parallel.init_from_env(args.device)
    params = parse_pairs(args.param, "--param", "KEY=VALUE")
    problem = ef.make_problem(args.problem, device=device, **params)
    sync = torch.cuda.synchronize if problem.device.type == "cuda" else (lambda: None)

    def timed(fn) -> float:
        parallel.barrier()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    gd, edge = make_process("gd", problem, 0.01), make_process("edge", problem, 0.01)
    gd.init(problem.w0, 0)
    edge.init(problem.w0, 0)
    v = torch.randn(problem.dim, dtype=problem.dtype, device=problem.device)
    out: dict[str, list[float]] = {"gd": [], "edge": [], "hvp": []}
    gd.step(), edge.step(), problem.hvp(problem.w0, v)  # warm-up (allocations, first collectives)
    for _ in range(args.repeats):
        out["gd"].append(timed(lambda: [gd.step() for _ in range(args.steps)]) / args.steps)
        out["edge"].append(timed(lambda: [edge.step() for _ in range(args.steps)]) / args.steps)
        out["hvp"].append(timed(lambda: [problem.hvp(problem.w0, v) for _ in range(args.steps)]) / args.steps)
    if parallel.is_main():
        medians = {k: statistics.median(t) for k, t in out.items()}
        print(json.dumps({"dim": problem.dim, "dtype": str(problem.dtype), **medians}))
    parallel.leave()
    parallel.exit_process(0)


def launch(args: argparse.Namespace, nproc: int, threads: int) -> dict:
    inner = [__file__, WORKER_FLAG, "--problem", args.problem, "--device", args.device]
    inner += ["--steps", str(args.steps), "--repeats", str(args.repeats), "--threads", str(threads)]
    inner += [f"--param={p}" for p in args.param]
    if nproc == 1:
        cmd = [sys.executable, *inner]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += inner
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def evaluations_per_step(problem_name: str, params: list[str]) -> dict[str, dict]:
    """Gradients, HVPs and third derivatives per GD step of each flow, from a short real run."""
    import edgeflow as ef
    from edgeflow.cli import parse_pairs

    problem = ef.make_problem(problem_name, **parse_pairs(params, "--param", "KEY=VALUE"))
    spec = ef.PROBLEMS[problem_name]
    steps = 5
    res = ef.compare(problem, spec.lr, steps, ["gd", "midpoint", "edge", "central"], sharpness_every=steps)
    return {flow: {k: v / steps for k, v in res[flow].info["cost"].items()} for flow in res}


def measured_evaluations(results: Path, case: str) -> dict[str, dict]:
    """Edge Flow's and the central flow's evaluations per GD step, as the fidelity suite measured
    them on ``case`` at EoS (``benchmarks/fidelity.py`` writes ``results``), at its sub-steps."""
    flows = next(c for c in json.loads(results.read_text())["cases"] if c["name"] == case)["flows"]
    out = {}
    for key in ("edge", "central"):
        row = flows[key]
        label = f"{key} ({row['options']['substeps']} sub-steps, as measured on {case})"
        out[label] = {k: v for k, v in row["per_step"].items() if k != "loss"}
    return out


def estimate(args: argparse.Namespace) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgeflow.zoo import models, problem_params

    images, cost = 50_000, {"grad": 3.0, "hvp": 6.0, "third": 9.0}  # forward passes per evaluation
    evals = {"gd": {"grad": 1}, **measured_evaluations(ROOT / "docs" / "results.json", "mnist5k-cnn")}
    defaults = problem_params("cifar10-resnet")
    print(
        f"ESTIMATE (not measured): full CIFAR-10 ({images:,} images), {args.gpus} GPUs at "
        f"{args.tflops:g} TFLOP/s each, all-reduce bus bandwidth {args.bandwidth:g} GB/s + "
        f"{args.latency:g} µs, float32, no overlap of compute and communication\n"
    )
    print(
        "| model | d | forward MFLOP/image | flow | s per GD step, 1 GPU | all-reduced / step | efficiency |"
    )
    print("|---|---|---|---|---|---|---|")
    for channels, blocks in ((defaults["channels"], defaults["blocks"]), (32, 2), (64, 2)):
        model = models.ResNet(3, 32, 10, channels=channels, blocks=blocks)
        d = sum(p.numel() for p in model.parameters())
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, 32, 32))
        forward = counter.get_total_flops()
        for flow, counts in evals.items():
            compute = sum(cost[k] * n for k, n in counts.items()) * forward * images / (args.tflops * 1e12)
            calls = math.ceil(sum(counts.values()))
            ring = 2 * (args.gpus - 1) / args.gpus * 4 * d
            comm = calls * (ring / (args.bandwidth * 1e9) + args.latency * 1e-6)
            parallel_time = compute / args.gpus + comm
            eff = compute / (args.gpus * parallel_time)
            print(
                f"| channels={channels}, blocks={blocks} | {d:,} | {forward / 1e6:.1f} | {flow} | "
                f"{compute:.2f} | {calls * 4 * d / 1e6:.1f} MB | {eff:.2%} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--problem", default="mnist5k-cnn")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads per process (0: cores / nproc)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--estimate", action="store_true", help="the full-size CIFAR-10 estimate (no timing)")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--tflops", type=float, default=20.0, help="sustained TFLOP/s per GPU (assumed)")
    ap.add_argument("--bandwidth", type=float, default=100.0, help="all-reduce bus bandwidth, GB/s (assumed)")
    ap.add_argument("--latency", type=float, default=30.0, help="all-reduce latency, µs (assumed)")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.estimate:
        estimate(args)
        return
    if not args.param:
        # chunk_size: per-example cost grows with the batch on the CPU (caches), so the baseline
        # evaluates in the chunks that are fastest for it; otherwise halving the data per process
        # alone makes 2 processes look superlinear.
        args.param = ["n=1000", "channels=16", "chunk_size=250"]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.nproc)
    one = launch(args, 1, threads)
    many = launch(args, args.nproc, threads)
    wide = launch(args, 1, threads * args.nproc)
    evals = evaluations_per_step(args.problem, args.param)
    bytes_per_float = 4 if "float32" in one["dtype"] else 8
    rows = []
    for key, label in (("gd", "GD step"), ("edge", "Edge Flow step"), ("hvp", "HVP")):
        eff = one[key] / (args.nproc * many[key])
        rows.append((label, one[key], many[key], eff, wide[key]))
    if args.json:
        record = {"one": one, "many": many, "wide": wide, "nproc": args.nproc, "threads": threads}
        print(json.dumps({**record, "evals": evals}))
        return
    print(
        f"{args.problem} {' '.join(args.param)} (d = {one['dim']}, {one['dtype']}), {args.device}, "
        f"{threads} thread(s) per process\n"
    )
    n = args.nproc
    print(
        f"| operation | 1 process (s) | {n} processes (s) | speed-up | efficiency | "
        f"1 process, {threads * n} threads (s) | {n} processes vs it |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, t1, tn, eff, tw in rows:
        print(f"| {label} | {t1:.4f} | {tn:.4f} | {t1 / tn:.2f} | {eff:.0%} | {tw:.4f} | {tw / tn:.2f}× |")
    print("\n| flow | grads / step | HVPs / step | 3rd derivatives / step | all-reduced per step |")
    print("|---|---|---|---|---|")
    for flow, c in evals.items():
        floats = (c["grad"] + c["hvp"] + c["third"]) * one["dim"] + c["loss"]
        print(
            f"| {flow} | {c['grad']:.1f} | {c['hvp']:.1f} | {c['third']:.1f} | "
            f"{floats * bytes_per_float / 1e6:.2f} MB |"
        )


if __name__ == "__main__":
    main()
