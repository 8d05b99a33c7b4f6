"""How large is GD's oscillation, and does each model's oscillation size match it?

    python benchmarks/oscillation_check.py [--json]

1. Default problem (digits MLP, η = 0.4, 400 steps), EoS window (steps ≥ 300), medians: GD's total
   oscillation ‖w_k − w*_k‖, its part along the top eigenvector |uᵀ(w_k − w*_k)|, and Edge Flow's r.
2. zhu (η = 0.15, from (3, 0.2)): the central flow's σ² formula 2⟨−∇L, ∇λ⟩/‖∇λ‖² evaluated at GD's
   midpoint and at the central flow's own point, against GD's measured oscillation² and Edge Flow's r².
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import edgeflow as ef


def digits_oscillation() -> dict:
    prob = ef.make_problem("digits-mlp")
    res = ef.compare(prob, 0.4, 400, ["gd", "midpoint", "edge"], sharpness_every=5)
    eos = res.distances["step"] >= 300
    steps = res["midpoint"]["step"]
    return {
        "gd_total_oscillation": float(np.median(res.distances["gd-midpoint"][eos])),
        "gd_top_eigenvector_oscillation": float(np.nanmedian(res["midpoint"]["oscillation"][steps >= 300])),
        "edge_magnitude": float(np.median(res["edge"]["magnitude"][res["edge"]["step"] >= 300])),
    }


def sigma_formula(prob: ef.Problem, w: torch.Tensor) -> tuple[float, float]:
    pairs = prob.eigs(w)
    u = pairs.vectors[0]
    grad_lam = prob.third(w, u, u)
    return float(pairs.values[0]), float(-2 * (prob.grad(w) @ grad_lam) / (grad_lam @ grad_lam))


def zhu_sigma() -> list[dict]:
    prob = ef.make_problem("zhu")
    res = ef.compare(prob, 0.15, 400, ["midpoint", "edge", "central"], save_params=True)
    rows = []
    for k in (100, 200, 400):
        lam_mid, sigma_mid = sigma_formula(prob, torch.from_numpy(res["midpoint"]["params"][k]))
        lam_c, sigma_c = sigma_formula(prob, torch.from_numpy(res["central"]["params"][k]))
        rows.append(
            {
                "step": k,
                "gd_oscillation_sq": float(res["midpoint"]["oscillation"][k] ** 2),
                "edge_r_sq": float(res["edge"]["magnitude"][k] ** 2),
                "sigma_sq_formula_at_gd_midpoint": sigma_mid,
                "gd_midpoint_sharpness": lam_mid,
                "central_sigma_sq": float(res["central"]["sigma_sq"][k]),
                "sigma_sq_formula_at_central": sigma_c,
                "central_sharpness": lam_c,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {"digits": digits_oscillation(), "zhu": zhu_sigma()}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    d = out["digits"]
    print("digits MLP, EoS window medians:")
    print(
        f"  GD ‖w − w*‖ = {d['gd_total_oscillation']:.3e}, "
        f"|uᵀ(w − w*)| = {d['gd_top_eigenvector_oscillation']:.3e}"
    )
    print(f"  Edge Flow r = {d['edge_magnitude']:.3e}\n")
    print("zhu: | step | GD osc² | EF r² | σ² formula at GD midpoint | S(w*) | central σ² | S(central) |")
    for r in out["zhu"]:
        print(
            f"  | {r['step']} | {r['gd_oscillation_sq']:.4e} | {r['edge_r_sq']:.4e} | "
            f"{r['sigma_sq_formula_at_gd_midpoint']:.4e} | {r['gd_midpoint_sharpness']:.4f} | "
            f"{r['central_sigma_sq']:.4e} | {r['central_sharpness']:.4f} |"
        )


if __name__ == "__main__":
    main()
