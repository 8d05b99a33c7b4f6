"""Forecasting GD's loss spikes in your own training loop, and avoiding them.

Part 1 trains a tanh MLP on 500 scikit-learn digits by full-batch gradient descent (torch.optim.SGD,
η = 0.4) and lets ``ef.StabilityMonitor`` watch it: every step the monitor follows GD's oscillation
along the top Hessian eigenvector the way Edge Flow does (it grows by |ηS − 1| per step) and
forecasts when its share of the loss, ½·S·r², catches up with the loss itself — a loss spike.

Part 2 trains the same network with ``ef.EdgeStableGD``, which tracks the top eigenvector with one
Hessian-vector product per step and steps along Edge Flow's symmetrized gradient, damped along that
eigenvector and capped at (2 − margin)/S across it: no spike, at several times the cost of a GD step.

Part 3 wraps the same ``torch.optim.SGD`` in ``ef.OscillationCapped``: after SGD's own step it caps
the oscillation GD's iterates show (its direction from their third difference, its curvature and
the iterate's offset from the gradients), at no cost beyond GD's gradient.

    python examples/stability_monitor.py        # about 15 s on 2 CPU cores

On a flat parameter vector (``ef.Problem``) the monitor is ``ef.StabilityMonitor(problem, lr)`` and
``mon.update(w, loss=...)``; the README shows that loop.
"""

from __future__ import annotations

import math
import os

import torch
from sklearn.datasets import load_digits
from torch import nn

import edgeflow as ef

LR = 0.4
STEPS = 15 if os.environ.get("EDGEFLOW_EXAMPLES_QUICK") else 350
EXAMPLES = 30 if os.environ.get("EDGEFLOW_EXAMPLES_QUICK") else 500
SPIKE = 1.2  # a loss 1.2× above its running minimum counts as a spike


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The first EXAMPLES digits, standardized pixels (float64), integer labels."""
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:EXAMPLES], dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0).clamp_min(1e-8)
    return X, torch.tensor(y[:EXAMPLES])


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    ).double()


def mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """½·mean‖f(x) − onehot(y)‖², the loss edgeflow's Problem.from_module(loss="mse") uses."""
    return 0.5 * ((model(X) - nn.functional.one_hot(y, 10).double()) ** 2).sum(1).mean()


def first_spike(losses: list[float]) -> int | None:
    lowest = math.inf
    for step, loss in enumerate(losses):
        if loss > SPIKE * lowest:
            return step
        lowest = min(lowest, loss)
    return None


def largest_spike(losses: list[float]) -> float:
    """The largest ratio of a loss to the lowest loss before it."""
    lowest, ratio = math.inf, 1.0
    for loss in losses:
        ratio = max(ratio, loss / lowest)
        lowest = min(lowest, loss)
    return ratio


def watched_gd(X: torch.Tensor, y: torch.Tensor) -> list[float]:
    model = network()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    monitor = ef.StabilityMonitor.from_module(model, (X, y), LR, horizon=50)
    losses, warned, sharpness = [], None, math.nan
    for step in range(STEPS):
        opt.zero_grad()
        loss = mse(model, X, y)
        losses.append(loss.item())
        report = monitor.update(model, loss=losses[-1])  # the iterate this step starts from
        if math.isfinite(report["sharpness"]):  # measured now and then (adaptively), NaN in between
            sharpness = report["sharpness"]
        if report["warning"] and warned is None:
            warned = step
            print(
                f"step {step}: first warning, spike forecast at step {step + report['spike_in']:.0f} "
                f"(sharpness {sharpness:.3g}, 2/η = {2 / LR:g}, "
                f"oscillation {report['oscillation']:.2e}, growing ×{report['growth']:.3f} per step)"
            )
        elif warned is not None and step % 10 == 0 and step < (first_spike(losses) or STEPS):
            print(f"step {step}: spike forecast at step {step + report['spike_in']:.0f}")
        loss.backward()
        opt.step()
    print(f"GD's first loss spike (loss > {SPIKE}× its running minimum): step {first_spike(losses)}")
    return losses


def edge_stable_gd(X: torch.Tensor, y: torch.Tensor) -> list[float]:
    model = network()
    opt = ef.EdgeStableGD(model.parameters(), lr=LR)  # remedy="edge_capped" (default), "lr_cap" or "damped"

    def closure() -> torch.Tensor:
        # the loss with its graph, without backward: the optimizer differentiates it twice
        opt.zero_grad()
        return mse(model, X, y)

    losses = [float(opt.step(closure)) for _ in range(STEPS)]
    print(f"EdgeStableGD: last step size {opt.step_size:.3g} (η = {LR}), top curvature {opt.rayleigh:.3g}")
    return losses


def capped_gd(X: torch.Tensor, y: torch.Tensor) -> list[float]:
    model = network()
    opt = ef.OscillationCapped(torch.optim.SGD(model.parameters(), lr=LR))  # max_share=0.05 of the loss
    losses, capped = [], 0
    for _ in range(STEPS):
        opt.zero_grad()
        loss = mse(model, X, y)
        losses.append(loss.item())
        loss.backward()
        opt.step(loss)  # SGD's step, then the cap
        capped += opt.cap.capped
    print(f"OscillationCapped: {capped} of {STEPS} steps capped")
    return losses


def main() -> None:
    X, y = digits()
    print(f"Part 1: GD (torch.optim.SGD, full batch), η = {LR}, watched by ef.StabilityMonitor")
    gd = watched_gd(X, y)
    print("\nPart 2: the same network trained with ef.EdgeStableGD")
    stable = edge_stable_gd(X, y)
    print("\nPart 3: torch.optim.SGD wrapped in ef.OscillationCapped")
    capped = capped_gd(X, y)
    print(f"\n{'':18}{'final loss':>12}{'largest spike':>15}")
    for name, losses in (("GD", gd), ("EdgeStableGD", stable), ("OscillationCapped", capped)):
        print(f"{name:18}{losses[-1]:>12.4g}{largest_spike(losses):>14.3g}×")


if __name__ == "__main__":
    main()
