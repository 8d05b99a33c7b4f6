"""Peak memory of a run against its length: streamed to a run directory, a run's memory must not grow
with the number of steps (records and parameters go to disk), while an in-memory ``compare`` holds
them all. Also the cost of streaming and checkpointing: wall time of the streamed run relative to
the in-memory one.

    python benchmarks/memory.py [--steps 100,1000] [--flows gd,midpoint] [--param n=500]

Each case runs in a fresh Python process (so peak RSS is that run's alone) on digits-mlp with
``save_params`` on (d = 8,970 float64 parameters per flow and record: 72 kB), sharpness every 50
steps: ``edgeflow run`` (streamed, summary and tables included) against an in-memory
``ef.compare``. Reported: peak resident memory of the process, and its growth from the shorter run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import contextlib, io, json, resource, sys, time, torch
import edgeflow as ef
from edgeflow.cli import main
torch.set_num_threads(1)
steps, flows, params, out = json.loads(sys.argv[1])
t0 = time.perf_counter()
if out:  # what `edgeflow run` does: stream, then summarize without loading the parameters
    argv = ["run", "--steps", str(steps), "--flows", ",".join(flows), "--sharpness-every", "50"]
    argv += ["--save-params", "--no-plots", "--quiet", "--out", out]
    argv += [f"--param={k}={v}" for k, v in params.items()]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
else:
    prob = ef.make_problem("digits-mlp", **params)
    ef.compare(prob, 0.4, steps, flows, sharpness_every=50, save_params=True)
wall = time.perf_counter() - t0
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall}))
"""


def measure(steps: int, flows: list[str], params: dict, streamed: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/run" if streamed else None
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps([steps, flows, params, out])],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="100,1000")
    ap.add_argument("--flows", default="gd,midpoint")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    from edgeflow.cli import parse_pairs

    steps = [int(s) for s in args.steps.split(",")]
    flows = args.flows.split(",")
    params = parse_pairs(args.param, "--param", "KEY=VALUE")
    print(f"digits-mlp {params or ''}, flows {', '.join(flows)}, save_params on\n")
    print("| records kept | steps | peak RSS (MB) | growth vs first (MB) | wall (s) |")
    print("|---|---|---|---|---|")
    for streamed, label in ((True, "on disk (`edgeflow run`)"), (False, "in memory (`compare`)")):
        first = None
        for n in steps:
            m = measure(n, flows, params, streamed)
            first = m["peak_rss_mb"] if first is None else first
            rss = m["peak_rss_mb"]
            print(f"| {label} | {n} | {rss:.0f} | {rss - first:+.0f} | {m['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
