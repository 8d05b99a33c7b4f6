"""A learning-rate sweep: GD at several η from one initialization, its sharpness against 2/η.

Below some η GD's sharpness stays under 2/η (gradient descent behaves like gradient flow); above it,
the sharpness rises to 2/η, overshoots and then hovers at it (the edge of stability); further up GD
diverges. ``ef.sweep`` runs GD with its midpoints at each η, writes one run directory per η plus
``sweep.png``, ``sweep.md`` and ``sweep.json``, and returns the table's rows and each η's results.

    python examples/lr_sweep.py                       # digits-mlp, η = 0.1 … 6.4, ~1 min on 2 cores
    python examples/lr_sweep.py --out runs/my-sweep   # then look at runs/my-sweep/sweep.png

The same from the command line: ``edgeflow sweep --problem digits-mlp --lrs 0.1,0.2,0.4,0.8``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import edgeflow as ef

QUICK = bool(os.environ.get("EDGEFLOW_EXAMPLES_QUICK"))
LRS = [0.1, 0.2, 0.4, 0.8, 1.6, 6.4]
STEPS = 10 if QUICK else 300
# the default problem, at a tiny size for a smoke test
PARAMS = {"n": 20, "width": 4} if QUICK else {}


def main() -> None:
    parser = argparse.ArgumentParser(description="GD's sharpness against 2/η over a range of η")
    parser.add_argument("--out", default="runs/example-lr-sweep", help="sweep directory (replaced)")
    args = parser.parse_args()

    result = ef.sweep(
        "digits-mlp", LRS, STEPS, out=args.out, params=PARAMS, sharpness_every=10, force=True, say=print
    )
    print(result.markdown())

    # Each η's full records are at hand too (an ef.Result): here, the share of the sharpness
    # measurements in the second half of the run that lie within 10% of 2/η — the time GD spends at
    # the edge of stability. The midpoints' sharpness is measured every 10 steps, NaN in between.
    for lr, res in result.results.items():
        diverged = res["gd"].info.get("diverged_at")
        if diverged is not None:
            print(f"η = {lr:g}: diverged at step {diverged}")
            continue
        steps, sharpness = res["midpoint"]["step"], res["midpoint"]["sharpness"]
        late = sharpness[(steps >= STEPS / 2) & np.isfinite(sharpness)]
        at_edge = np.mean(np.abs(late / res.threshold - 1) < 0.1) if late.size else float("nan")
        print(f"η = {lr:g}: {at_edge:.0%} of the late measurements within 10% of 2/η = {res.threshold:.3g}")
    print(f"figure: {args.out}/sweep.png")


if __name__ == "__main__":
    main()
