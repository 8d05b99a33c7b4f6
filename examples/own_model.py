"""Your own model and data: any ``nn.Module`` and tensors, GD side by side with Edge Flow and
gradient flow, and how faithfully each tracks GD.

The model is a small tanh network fitting a 1-D curve (MSE, float64). At η = 0.25 GD's sharpness
rises from 5.1 to the stability threshold 2/η = 8 at step 70, overshoots to about 9.7 near step 170
and drops back below 2/η: the onset of the edge of stability. Edge Flow reproduces the overshoot
(height and step); gradient flow rises past 2/η without one.

    python examples/own_model.py                  # about 15 s on 2 CPU cores
    python examples/own_model.py --out runs/mine  # also a run directory; `edgeflow plot runs/mine`

The same problem from the command line, through the factory ``make_problem`` below (run from this
directory; a module in the current directory needs no PYTHONPATH):

    edgeflow run --problem own_model:make_problem --lr 0.25 --steps 300
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import edgeflow as ef
from edgeflow.metrics import summarize, summary_markdown

LR = 0.25
STEPS = 20 if os.environ.get("EDGEFLOW_EXAMPLES_QUICK") else 300


class CurveFitter(nn.Module):
    """Two tanh hidden layers; any module works, as long as its forward pass is plain torch."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def curve(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of y = sin(3x) + x/2 on [−2, 2]."""
    x = torch.linspace(-2, 2, n).unsqueeze(1)
    return x, torch.sin(3 * x) + 0.5 * x


def make_problem(*, dtype, device, seed: int, width: int = 32) -> ef.Problem:
    """The factory `edgeflow run --problem own_model:make_problem` calls: it takes the keywords
    dtype, device and seed, and any parameters of its own (`--param width=16`)."""
    with torch.random.fork_rng(devices=[]):  # the initialization from `seed`, global RNG untouched
        torch.manual_seed(seed)
        model = CurveFitter(width)
    # Problem.from_module flattens the parameters into one vector w and evaluates the full-batch
    # loss ½·mean‖f(x) − y‖² with torch.func; the model is moved to dtype and device.
    return ef.Problem.from_module(model, curve(), loss="mse", dtype=dtype, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description="GD, Edge Flow and gradient flow on your own model")
    parser.add_argument("--out", help="also write a run directory (results.h5, resumable)")
    args = parser.parse_args()

    problem = make_problem(dtype="float64", device="cpu", seed=0)
    print(f"{problem.dim} parameters; sharpness at initialization {problem.sharpness(problem.w0):.3f}")
    res = ef.compare(
        problem,
        lr=LR,
        steps=STEPS,
        # GD, its midpoints (GD's center, where fidelity is measured), and two models of GD
        flows=["gd", "midpoint", "edge", "gradient"],
        sharpness_every=10,
        out=args.out,
        progress=True,
    )
    print(summary_markdown(summarize(res)))
    fidelity = res.metrics()
    for flow in ("edge", "gradient"):
        print(
            f"{flow}: median distance to GD's midpoint, relative to how far GD moved: "
            f"{fidelity[flow]['distance_median']:.3g} over the run"
        )


if __name__ == "__main__":
    main()
