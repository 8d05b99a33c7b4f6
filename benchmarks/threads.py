"""The README's first command with and without ``OMP_NUM_THREADS=1``: wall time of each.

    python benchmarks/threads.py [--steps 100] [--repeat 1] [-- EXTRA edgeflow run FLAGS]

Runs ``edgeflow run`` (the default problem and flows, ``--steps`` GD steps, no figures) in a fresh
process per setting, so that torch's thread pool starts as a user's would. Prints one line per run:
the environment, the threads the run reported using, and the wall time. Nothing is asserted: the
numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def run(env: dict[str, str], steps: int, extra: list[str]) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "edgeflow", "run", "--steps", str(steps), "--no-plots", "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(
            [*argv, "--out", os.path.join(tmp, "run"), *extra], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr)
    found = re.search(r"(\d+) threads?\)", proc.stderr)
    return wall, found.group(1) if found else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("extra", nargs="*", help="more `edgeflow run` flags (after --)")
    args = p.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    settings = {"OMP_NUM_THREADS unset": base, "OMP_NUM_THREADS=1": {**base, "OMP_NUM_THREADS": "1"}}
    print(f"edgeflow run --steps {args.steps} {' '.join(args.extra)}; load average {os.getloadavg()[0]:.2f}")
    for _ in range(args.repeat):
        for label, env in settings.items():
            wall, threads = run(env, args.steps, args.extra)
            print(f"{label:>22}: {threads} thread(s), {wall:6.1f} s")


if __name__ == "__main__":
    main()
