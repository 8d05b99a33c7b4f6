"""Forecasting loss spikes in a PyTorch Lightning ``Trainer.fit``, and capping the learning rate at one.

Needs the Lightning extra: ``pip install 'edgeflow[lightning]'``.

Part 1 trains a tanh MLP on 500 scikit-learn digits with full-batch SGD (η = 0.4, one batch per
step) under ``pytorch_lightning.Trainer``, with ``StabilityCallback`` from
``edgeflow.integrations.lightning``: after every optimizer step it updates an
``ef.StabilityMonitor`` on the trainer's optimizer and writes ``stability/effective_sharpness``
(ηS for SGD), ``stability/threshold`` (2), ``stability/oscillation``, ``stability/spike_in`` and
``stability/warning`` to the trainer's logger. The script reads them back from the CSV logger and
prints the first warning next to GD's first loss spike.

Part 2 trains the same network with ``StabilityCallback(..., remedy="lr_cap")``: at a warning the
callback scales the learning rate so that the effective sharpness is at most (1 − margin) × the
threshold, and logs the scale as ``stability/lr_scale``.

    python examples/lightning_monitor.py        # about 20 s on 2 CPU cores, 5 of them importing Lightning
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
import warnings

import torch
from sklearn.datasets import load_digits
from torch import nn

try:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger
except ImportError:
    raise SystemExit("this example needs PyTorch Lightning: pip install 'edgeflow[lightning]'") from None

from edgeflow.integrations.lightning import StabilityCallback

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


class DigitsMLP(pl.LightningModule):
    """A tanh MLP (``self.net``) trained on ½·mean‖f(x) − onehot(y)‖² by SGD at η = LR."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
        ).double()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        X, y = batch
        loss = 0.5 * ((self.net(X) - nn.functional.one_hot(y, 10).double()) ** 2).sum(1).mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=LR)


def train(data: tuple[torch.Tensor, torch.Tensor], callback: StabilityCallback, logs: str) -> list[dict]:
    """STEPS full-batch steps; the logged rows (step, loss, stability/...) read back from the CSV."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=len(data[0]))
    logger = CSVLogger(logs, name="", version="run")
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers")  # one full batch a step
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)  # torch 2.13
        trainer.fit(DigitsMLP(), loader)
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def column(rows: list[dict], key: str) -> dict[int, float]:
    return {int(r["step"]): r[key] for r in rows if key in r}


def spikes(losses: list[float]) -> tuple[int | None, float]:
    """The first step whose loss is SPIKE× above the lowest before it, and the largest such ratio."""
    lowest, first, ratio = math.inf, None, 1.0
    for step, loss in enumerate(losses):
        if first is None and loss > SPIKE * lowest:
            first = step
        ratio = max(ratio, loss / lowest)
        lowest = min(lowest, loss)
    return first, ratio


def main() -> None:
    torch.set_num_threads(1)  # a 64-wide MLP: threads only wait on each other
    data = digits()
    sample = data  # the monitor's sample of the training data: here all of it
    with tempfile.TemporaryDirectory() as logs:
        print(f"Part 1: full-batch SGD, η = {LR}, under pytorch_lightning.Trainer with StabilityCallback")
        callback = StabilityCallback(sample, "mse", module="net", horizon=50)
        rows = train(data, callback, os.path.join(logs, "gd"))
        losses = list(column(rows, "loss").values())
        sharpness = column(rows, "stability/effective_sharpness")
        last = list(sharpness.values())[-1]
        print(f"ηS measured at {len(sharpness)} of {STEPS} steps, last {last:.3g} (threshold 2)")
        warned = [step for step, w in column(rows, "stability/warning").items() if w]
        spike_in = column(rows, "stability/spike_in")
        if warned:
            step = warned[0]
            print(f"step {step}: first warning, spike forecast at step {step + spike_in[step]:.0f}")
        else:
            print("no warning")
        first, largest = spikes(losses)
        print(f"GD's first loss spike (loss > {SPIKE}× its running minimum): step {first}")

        print("\nPart 2: the same run with StabilityCallback(..., remedy='lr_cap')")
        callback = StabilityCallback(sample, "mse", module="net", remedy="lr_cap", horizon=50)
        capped_rows = train(data, callback, os.path.join(logs, "capped"))
        scales = column(capped_rows, "stability/lr_scale")
        for step, scale in scales.items():
            if scale < 1:
                print(f"step {step}: warning, lr × {scale:.3g}")
        capped = sum(scale < 1 for scale in scales.values())
        print(f"lr_cap: final η = {LR * callback.lr_scale:.3g} ({len(scales)} warnings, {capped} caps)")
        _, capped_largest = spikes(list(column(capped_rows, "loss").values()))

    print(f"\n{'':10}{'final loss':>12}{'largest spike':>15}")
    for name, final, ratio in (
        ("GD", losses[-1], largest),
        ("lr_cap", list(column(capped_rows, "loss").values())[-1], capped_largest),
    ):
        print(f"{name:10}{final:>12.4g}{ratio:>14.3g}×")


if __name__ == "__main__":
    main()
