"""Edge Flow from scratch, next to GD, on a two-parameter loss — plain PyTorch, no edgeflow.

The loss has a valley along y whose curvature across it, in x, grows as y does (the valley is tilted
in the parameter plane; x is the coordinate across it, y the one along it):

    L(x, y) = ½·y·x² + ½·μ·(y − y*)²

Its Hessian at the valley floor (x = 0) is diag(y, μ), so the sharpness is S = y. Gradient descent
slides along y toward y* = 6, so S rises past the stability threshold 2/η = 4 (η = 0.5). GD's x
component flips sign every step (ηS > 1) and, once S > 2/η, grows by |ηS − 1| per step; the x² term
it feeds back into the y-gradient then pushes y — the sharpness — back down. That is the edge of
stability.

Edge Flow models GD's iterates as w_k ≈ c + s_k·r·u (s_k = ±1 alternating) with three equations,
each a few lines below:

    center     dc/dt = −η·½[∇L(c + r·u) + ∇L(c − r·u)]   gradient flow on the symmetrized loss
    direction  du/dt = η·(H·u − ρ·u),  ρ = uᵀHu         Rayleigh-quotient dynamics → top eigenvector
    magnitude  r grows by |η·κ − 1| per GD step,  κ = uᵀ[∇L(c + r·u) − ∇L(c − r·u)] / (2r)

Time is counted in GD steps. What to look for: up to the first overshoot (sharpness ≈ 4.8 at step
~200) Edge Flow's center and magnitude follow GD's midpoint and oscillation closely; GD's catapult
then drives the sharpness further below 2/η than Edge Flow's, so the second rise starts from a
different level (the limitation docs/edge_flow.md describes on real networks).

Run it (about 10 seconds):

    python examples/edge_flow_toy.py            # prints both trajectories side by side
    python examples/edge_flow_toy.py --plot toy.png
"""

from __future__ import annotations

import argparse
import math
import os

import torch
from torch.func import grad, hessian, jvp

torch.set_default_dtype(torch.float64)

LR = 0.5  # η; the stability threshold is 2/η = 4
MU, Y_STAR = 0.01, 6.0
X0, Y0 = 0.1, 3.0  # the sharpness starts at 3, below 2/η
STEPS = 30 if os.environ.get("EDGEFLOW_EXAMPLES_QUICK") else 300
SUBSTEPS = 2  # Edge Flow's sub-steps per GD step (Δt = 1/2)


def rounding(c: torch.Tensor, u: torch.Tensor) -> float:
    """Variance of the kick that rounding GD's update to float64 gives its oscillation along u: each
    coordinate rounds to nearest, an error uniform in ±ulp/2 (edgeflow adds the gradient's own
    rounding, which it measures; in this toy the gradient is exact to rounding of the same size)."""
    ulp = torch.nextafter(c.abs(), torch.full_like(c, math.inf)) - c.abs()
    return float((u * ulp).square().sum()) / 12


# The valley is tilted by 30° in the (w₁, w₂) plane: then the rounding errors of GD's steps along the
# valley leak into the x direction, as they do in any real network, and that rounding is what seeds
# GD's oscillation (Edge Flow's rounding noise). Axis-aligned, x would shrink exactly and never reseed.
TILT = math.radians(30.0)
ROTATION = torch.tensor([[math.cos(TILT), -math.sin(TILT)], [math.sin(TILT), math.cos(TILT)]])


def valley_coordinates(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ROTATION.T @ w
    return x, y


def loss(w: torch.Tensor) -> torch.Tensor:
    x, y = valley_coordinates(w)
    return 0.5 * y * x**2 + 0.5 * MU * (y - Y_STAR) ** 2


W0 = ROTATION @ torch.tensor([X0, Y0])
gradient = grad(loss)


def hvp(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """∇²L(w)·v, by differentiating the gradient along v."""
    return jvp(gradient, (w,), (v,))[1]


def top_eigenpair(w: torch.Tensor) -> tuple[float, torch.Tensor]:
    values, vectors = torch.linalg.eigh(hessian(loss)(w))
    return float(values[-1]), vectors[:, -1]


def run_gd(steps: int) -> list[torch.Tensor]:
    """GD's iterates w_0 … w_{steps+1} (one beyond the last step, for the last midpoint)."""
    w = [W0.clone()]
    for _ in range(steps + 1):
        w.append(w[-1] - LR * gradient(w[-1]))
    return w


def run_edge_flow(steps: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Edge Flow's state (c, u, r) at every GD step."""
    c = W0.clone()
    _, u = top_eigenpair(c)
    # r(0): half of GD's first step along u, the oscillation about the midpoint of w_0 and w_1.
    r = 0.5 * LR * abs(float(u @ gradient(c)))
    states = [(c, u, r)]
    dt = 1.0 / SUBSTEPS
    h = LR * dt
    for _ in range(steps):
        for _ in range(SUBSTEPS):
            g_plus, g_minus = gradient(c + r * u), gradient(c - r * u)
            hu = hvp(c, u)
            rho = float(u @ hu)  # Rayleigh quotient uᵀHu
            # secant curvature along u; for a tiny r the difference of gradients is rounding noise,
            # and ρ is its limit r → 0
            kappa = float(u @ (g_plus - g_minus)) / (2 * r) if r > 1e-8 * max(1.0, float(c.norm())) else rho

            # 1. Center: a gradient step on the symmetrized loss ½[L(c + ru) + L(c − ru)]. Along u the
            #    flow is stiff (ηρ ≈ 2 at the edge): that component is stepped implicitly, factor
            #    1/(1 + hρ), so that c relaxes smoothly instead of re-running GD's flip-flop.
            g_sym = 0.5 * (g_plus + g_minus)
            along = float(u @ g_sym)
            c = c - h * (g_sym - along * u) - h * along / (1 + h * max(rho, 0.0)) * u

            # 2. Direction: one shifted power step (I + hH)u, normalized — the Rayleigh-quotient flow
            #    to first order, stable for every part of the spectrum.
            u = u + h * hu
            u = u / u.norm()

            # 3. Magnitude: r² is GD's mean square: it multiplies by |ηκ − 1|² per GD step (Δt of a
            #    step per sub-step), as GD's oscillation does, plus the rounding kick of each step.
            r = math.sqrt(r**2 * abs(LR * kappa - 1) ** (2 * dt) + dt * rounding(c, u))
        states.append((c, u, r))
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", metavar="PNG", help="also draw both trajectories into this file")
    args = parser.parse_args()

    w = run_gd(STEPS)
    midpoint = [w[0]] + [0.25 * (w[k - 1] + 2 * w[k] + w[k + 1]) for k in range(1, STEPS + 1)]
    edge = run_edge_flow(STEPS)

    print(f"η = {LR}, 2/η = {2 / LR:g}; GD's center is its midpoint ¼(w_k−1 + 2w_k + w_k+1)")
    print(
        f"{'step':>4} | {'S at GD center':>14} {'S at EF center':>14} | {'GD oscillation':>14} "
        f"{'EF r':>10} | {'‖c − w*‖':>9}"
    )
    rows = []
    for k in range(STEPS + 1):
        c, _, r = edge[k]
        s_gd, u_gd = top_eigenpair(midpoint[k])
        s_ef, _ = top_eigenpair(c)
        oscillation = abs(float(u_gd @ (w[k] - midpoint[k])))
        gap = float((c - midpoint[k]).norm())
        rows.append((k, s_gd, s_ef, oscillation, r, gap))
        if k % 20 == 0:
            print(f"{k:>4} | {s_gd:>14.4f} {s_ef:>14.4f} | {oscillation:>14.3e} {r:>10.3e} | {gap:>9.2e}")

    if args.plot:
        draw(args.plot, w[: STEPS + 1], midpoint, [state[0] for state in edge], rows)
        print(f"figure: {args.plot}")


def draw(path: str, iterates: list, midpoint: list, centers: list, rows: list) -> None:
    """Trajectories in the valley's coordinates, sharpness, and oscillation against GD steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row[0] for row in rows]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.6))
    for points, style, label in (
        (iterates, {"color": "0.6", "lw": 0.5, "marker": ".", "ms": 3}, "GD iterates"),
        (midpoint, {"color": "k"}, "GD midpoints"),
        (centers, {"color": "C3", "ls": "--"}, "Edge Flow center"),
    ):
        xy = [valley_coordinates(p) for p in points]
        left.plot([float(x) for x, _ in xy], [float(y) for _, y in xy], label=label, **style)
    left.set(xlabel="x (across the valley)", ylabel="y = sharpness at x = 0", title="trajectories")
    middle.plot(steps, [row[1] for row in rows], color="k", label="GD (midpoint)")
    middle.plot(steps, [row[2] for row in rows], "--", color="C3", label="Edge Flow (center)")
    middle.axhline(2 / LR, color="0.5", lw=0.8, ls=":", label="2/η")
    middle.set(xlabel="GD step", title="sharpness")
    # from step 1: GD's midpoint at step 0 is w_0 itself, so its oscillation there is 0
    right.semilogy(steps[1:], [row[3] for row in rows[1:]], color="k", label="GD |uᵀ(w − w*)|")
    right.semilogy(steps[1:], [row[4] for row in rows[1:]], "--", color="C3", label="Edge Flow r")
    right.set(xlabel="GD step", title="oscillation along u")
    for ax in (left, middle, right):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
