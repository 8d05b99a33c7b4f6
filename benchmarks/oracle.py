"""Oracle costs and sharpness-tracking accuracy on the default problem, measured in one process.

    python benchmarks/oracle.py [--json]

1. Wall time of a gradient, and of an HVP by reverse-over-reverse (``vjp`` of ``grad``, what
   ``Problem.hvp`` uses) and by forward-over-reverse (``jvp`` of ``grad``), relative to a gradient;
   and the evaluations of one Edge Flow sub-step (g± and ∇L(c), Hu and ∇²L ḡ) made as gradients at
   three points and two HVPs, against gradients at two points and ``grad_and_hvps`` (what Edge Flow
   does: ∇L(c) is the pass the two HVPs share); and the modified flow's ∇L and ∇²L∇L made as a
   gradient and an HVP against ``grad_and_hvp_of_grad`` (the product pulls back the gradient's
   own pass).
2. Warm-started Lanczos along a GD trajectory inside EoS: HVPs per measurement and the relative
   error of the top eigenvalue against a tight cold solve, for several residual tolerances — the
   numbers behind ``SharpnessTracker``'s default tolerance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch.func import jvp

import edgeflow as ef


def median_ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    prob = ef.make_problem("digits-mlp")
    lr = ef.PROBLEMS["digits-mlp"].lr
    w = prob.w0.clone()
    v = torch.randn(prob.dim, dtype=prob.dtype, generator=torch.Generator().manual_seed(0))
    grad_term = prob._grad_terms[0]  # the default problem has one term (no chunking)
    costs = {
        "grad_ms": median_ms(lambda: prob.grad(w)),
        "hvp_reverse_over_reverse_ms": median_ms(lambda: prob.hvp(w, v)),
        "hvp_forward_over_reverse_ms": median_ms(lambda: jvp(grad_term, (w,), (v,))[1]),
    }
    u = v / v.norm()
    pair = torch.stack([w + 1e-2 * u, w - 1e-2 * u])
    triple = torch.cat([pair, w[None]])
    tangents = torch.stack([u, prob.grad(w)])
    costs["substep_separate_ms"] = median_ms(
        lambda: (prob.grads(triple), prob.hvp(w, tangents[0]), prob.hvp(w, tangents[1]))
    )
    costs["substep_shared_ms"] = median_ms(lambda: (prob.grads(pair), prob.grad_and_hvps(w, tangents)))
    costs["substep_separate_vs_shared"] = costs["substep_separate_ms"] / costs["substep_shared_ms"]
    costs["modified_separate_ms"] = median_ms(lambda: prob.hvp(w, prob.grad(w)))
    costs["modified_shared_ms"] = median_ms(lambda: prob.grad_and_hvp_of_grad(w))
    costs["modified_separate_vs_shared"] = costs["modified_separate_ms"] / costs["modified_shared_ms"]
    costs["hvp_rev_vs_grad"] = costs["hvp_reverse_over_reverse_ms"] / costs["grad_ms"]
    costs["hvp_fwd_vs_rev"] = costs["hvp_forward_over_reverse_ms"] / costs["hvp_reverse_over_reverse_ms"]

    # GD iterates every 5 steps over steps 150..300 (the onset of EoS on the default problem)
    points = []
    for k in range(301):
        if k >= 150 and k % 5 == 0:
            points.append(w.clone())
        w = w - lr * prob.grad(w)
    gen = torch.Generator().manual_seed(1)
    exact = [float(prob.eigs(x, tol=1e-10, max_iter=300, generator=gen).values[0]) for x in points]
    tracking = []
    for tol in (1e-6, 1e-5, 1e-4, 1e-3):
        tracker = ef.SharpnessTracker(prob, seed=1, tol=tol)
        iters, errors = [], []
        for x, e in zip(points, exact, strict=True):
            before = prob.counts.hvp
            s, _ = tracker(x)
            iters.append(prob.counts.hvp - before)
            errors.append(abs(s - e) / e)
        tracking.append(
            {
                "tol": tol,
                "hvps_median": float(np.median(iters[1:])),
                "hvps_max": int(max(iters[1:])),
                "max_rel_error": float(max(errors)),
            }
        )
    if args.json:
        print(json.dumps({"costs": costs, "tracking": tracking}, indent=2))
        return
    print(f"digits-mlp (d = {prob.dim}, float64), medians of 30 calls")
    print(f"gradient {costs['grad_ms']:.2f} ms")
    print(
        f"HVP reverse-over-reverse {costs['hvp_reverse_over_reverse_ms']:.2f} ms "
        f"({costs['hvp_rev_vs_grad']:.2f}× a gradient)"
    )
    print(
        f"HVP forward-over-reverse {costs['hvp_forward_over_reverse_ms']:.2f} ms "
        f"({costs['hvp_fwd_vs_rev']:.2f}× reverse-over-reverse)"
    )
    print(
        f"Edge Flow sub-step: gradients at 3 points + 2 HVPs {costs['substep_separate_ms']:.2f} ms, "
        f"gradients at 2 points + grad_and_hvps {costs['substep_shared_ms']:.2f} ms "
        f"({costs['substep_separate_vs_shared']:.2f}×)"
    )
    print(
        f"modified flow evaluation: gradient + HVP {costs['modified_separate_ms']:.2f} ms, "
        f"grad_and_hvp_of_grad {costs['modified_shared_ms']:.2f} ms "
        f"({costs['modified_separate_vs_shared']:.2f}×)\n"
    )
    print("warm-started Lanczos along GD, steps 150–300 every 5 (sharpness tracking)")
    print("| residual tol | HVPs (median) | HVPs (max) | max rel. error of λ_max |")
    print("|---|---|---|---|")
    for row in tracking:
        print(f"| {row['tol']:g} | {row['hvps_median']:g} | {row['hvps_max']} | {row['max_rel_error']:.1e} |")


if __name__ == "__main__":
    main()
