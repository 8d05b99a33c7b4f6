"""edgeflow.integrations.lightning: StabilityCallback in a real ``Trainer.fit`` on the CPU.

The callback's logged effective sharpness against a fresh monitor on the trained model and optimizer,
its threshold against the optimizer's (SGD with momentum, Adam), the lr_cap remedy on a quadratic
(linear model, MSE) trained far above its threshold, the refusals, and the error without Lightning.
"""

from __future__ import annotations

import csv
import importlib
import math
import os
import sys
import types

import pytest
import torch
from torch import nn

import edgeflow as ef
from conftest import build_mlp

if os.environ.get("CI"):
    # CI installs the test extra, which has Lightning: its absence there is a failure, not a skip
    import pytorch_lightning as pl
else:
    pl = pytest.importorskip("pytorch_lightning", reason="pip install 'edgeflow[lightning]'")

from pytorch_lightning.loggers import CSVLogger

from edgeflow.integrations.lightning import StabilityCallback

pytestmark = [
    # a full batch per step (one batch per epoch) is what the monitor models; Lightning says so each epoch
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    # torch 2.13 deprecates a class Lightning 2.6 still builds: Lightning's to change, not ours
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
]


class Regression(pl.LightningModule):
    """``net`` trained with full-batch ½·mean‖net(x) − onehot(y)‖² by the optimizer ``make_optimizer``
    returns (an optimizer, or a Lightning optimizer configuration)."""

    def __init__(self, net: nn.Module, make_optimizer, classes: int = 3) -> None:
        super().__init__()
        self.net = net
        self.make_optimizer = make_optimizer
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        X, y = batch
        target = nn.functional.one_hot(y, self.classes).to(X.dtype)
        loss = 0.5 * ((self(X) - target) ** 2).sum(1).mean()
        self.log("loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return self.make_optimizer(self.net.parameters())


def fit(module: pl.LightningModule, data, callback, tmp_path, steps: int) -> list[dict]:
    """``steps`` full-batch steps of ``Trainer.fit`` on the CPU; the CSV logger's rows, as numbers."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=len(data[0]))
    logger = CSVLogger(tmp_path, name="", version="run")
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, loader)
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def logged(rows: list[dict], key: str) -> dict[int, float]:
    """``stability/<key>`` by step."""
    return {int(r["step"]): r[f"stability/{key}"] for r in rows if f"stability/{key}" in r}


OPTIMIZERS = {
    "momentum": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), lambda opt, state: 2 + 2 * 0.9),
    "adam": (
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
        lambda opt, state: opt.threshold / opt.momentum_gain(state),
    ),
}


@pytest.mark.parametrize("key", sorted(OPTIMIZERS))
def test_logged_effective_sharpness_is_a_fresh_monitors(tiny_data, tmp_path, key):
    """Measured at every step (sharpness_every=1), the last logged effective sharpness is the one a
    fresh monitor measures on the trained model and optimizer; every logged threshold is the
    optimizer's (2 + 2β for heavy-ball, Adam's over its bias-correction gain at that step)."""
    make_optimizer, threshold = OPTIMIZERS[key]
    steps = 6
    module = Regression(build_mlp(width=4, depth=1).double(), make_optimizer)
    # the optimizer trains all of the LightningModule's parameters: the module or its `net` will do
    callback = StabilityCallback(
        tiny_data, "mse", module="net" if key == "momentum" else None, sharpness_every=1
    )
    rows = fit(module, tiny_data, callback, tmp_path, steps)

    sharpness, thresholds = logged(rows, "effective_sharpness"), logged(rows, "threshold")
    assert sorted(sharpness) == sorted(thresholds) == list(range(steps))
    assert all(math.isfinite(v) and v > 0 for v in sharpness.values())
    assert logged(rows, "warning") == dict.fromkeys(range(steps), 0.0)
    losses = {int(r["step"]) for r in rows if "loss" in r}
    assert losses == set(range(steps))  # the same steps as the module's own metrics

    optimizer = module.trainer.optimizers[0]
    fresh = ef.StabilityMonitor.for_optimizer(optimizer, module.net, tiny_data, "mse").update()
    assert sharpness[steps - 1] == pytest.approx(fresh["effective_sharpness"], rel=2e-2)
    assert thresholds[steps - 1] == pytest.approx(fresh["threshold"], rel=1e-12)
    described = callback.monitor.optimizer
    assert type(described).__name__ == {"momentum": "Momentum", "adam": "Adam"}[key]
    for step, value in thresholds.items():
        state = {"t": float(step + 1)}  # Adam's step count after step+1 optimizer steps
        assert value == pytest.approx(threshold(described, state), rel=1e-12), step


def test_batch_sharpness_is_logged_where_measured_with_its_warning_at_every_step(tiny_data, tmp_path):
    """With ``batch_size``, ``batch_sharpness`` at its measurements (every ``batch_every`` steps) and
    ``batch_warning`` at every step; without it neither is written (the test above)."""
    module = Regression(build_mlp(width=4, depth=1).double(), OPTIMIZERS["momentum"][0])
    callback = StabilityCallback(tiny_data, "mse", batch_size=10, batch_every=2)
    rows = fit(module, tiny_data, callback, tmp_path, 5)
    assert sorted(logged(rows, "batch_sharpness")) == [0, 2, 4]
    assert logged(rows, "batch_warning") == dict.fromkeys(range(5), 0.0)


def linear_problem(tiny_data) -> tuple[nn.Module, float]:
    """A linear model under MSE: a quadratic loss whose sharpness is λ_max of the inputs' second moment
    (with a 1 for the bias); the model and that sharpness."""
    X, _ = tiny_data
    torch.manual_seed(0)
    net = nn.Linear(X.shape[1], 3).double()
    Z = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    return net, float(torch.linalg.eigvalsh(Z.T @ Z / len(X))[-1])


def test_lr_cap_lowers_the_lr_by_the_logged_scale(tiny_data, tmp_path):
    """SGD at ηS = 3 on a quadratic diverges along the top eigenvector (×2 per step). The monitor
    warns, the remedy scales the lr by the logged factor to (1 − margin)·2/S, where the oscillation
    decays; a LambdaLR schedule stepping every batch from its base_lrs keeps the cap."""
    net, S = linear_problem(tiny_data)
    lr = 3.0 / S

    def make_optimizer(params):
        opt = torch.optim.SGD(params, lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    callback = StabilityCallback(tiny_data, module="net", remedy="lr_cap", margin=0.1, horizon=50)
    module = Regression(net, make_optimizer)
    rows = fit(module, tiny_data, callback, tmp_path, steps=30)

    scales = logged(rows, "lr_scale")
    warned = [step for step, w in logged(rows, "warning").items() if w == 1.0]
    assert warned and sorted(scales) == warned
    first = warned[0]
    assert scales[first] == pytest.approx(0.9 * 2 / 3, rel=2e-2)  # ηS = 3 → 0.9 · 2
    assert all(s <= 1 for s in scales.values())
    final_lr = module.trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr == pytest.approx(lr * math.prod(scales.values()), rel=1e-12)
    assert callback.lr_scale == pytest.approx(math.prod(scales.values()), rel=1e-12)
    # measured again right after the cap: at most (1 − margin)·2
    sharpness = logged(rows, "effective_sharpness")
    after = min(step for step in sharpness if step > first)
    assert after == first + 1
    assert sharpness[after] <= 0.9 * 2 * 1.02
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[first + 1]  # the oscillation decays once capped


def test_oscillation_cap_takes_the_wrapped_optimizers_capped_steps(tiny_data, tmp_path):
    """remedy="oscillation_cap" inside ``Trainer.fit`` takes the steps ``ef.OscillationCapped`` takes
    in a plain loop from the same start (to rounding), and logs whether each was capped: SGD at
    ηS ≈ 8, where the cap holds the oscillation from the first steps."""
    steps, lr = 12, 4.0
    net = build_mlp(width=4, depth=1).double()
    plain = build_mlp(width=4, depth=1).double()
    plain.load_state_dict(net.state_dict())
    callback = StabilityCallback(tiny_data, module="net", remedy="oscillation_cap", sharpness_every=4)
    rows = fit(Regression(net, lambda ps: torch.optim.SGD(ps, lr=lr)), tiny_data, callback, tmp_path, steps)

    X, y = tiny_data
    target = nn.functional.one_hot(y, 3).to(X.dtype)
    wrapped = ef.OscillationCapped(torch.optim.SGD(plain.parameters(), lr=lr))
    capped = []
    for _ in range(steps):
        wrapped.zero_grad()
        loss = 0.5 * ((plain(X) - target) ** 2).sum(1).mean()
        loss.backward()
        wrapped.step(loss)
        capped.append(float(wrapped.cap.capped))
    for a, b in zip(net.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert logged(rows, "capped") == dict(enumerate(capped))
    assert sum(capped) > 0


class TwoOptimizers(Regression):
    def configure_optimizers(self):
        first, second = self.net[0].parameters(), self.net[2].parameters()
        return [torch.optim.SGD(first, lr=0.1), torch.optim.SGD(second, lr=0.1)]

    def training_step(self, batch, batch_idx):  # manual optimization: Lightning 2 wants it with two
        loss = super().training_step(batch, batch_idx)
        for opt in self.optimizers():
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in self.optimizers():
            opt.step()


def test_refusals_name_the_value(tiny_data, tmp_path):
    with pytest.raises(ef.ConfigError, match=r"unknown loss 'nll'; valid choices: mse, ce"):
        StabilityCallback(tiny_data, "nll")
    with pytest.raises(
        ef.ConfigError, match=r"unknown remedy 'clip'; valid choices: lr_cap, oscillation_cap, None"
    ):
        StabilityCallback(tiny_data, remedy="clip")
    with pytest.raises(ef.ConfigError, match=r"margin must be a number in \[0, 1\), got 1\.5"):
        StabilityCallback(tiny_data, remedy="lr_cap", margin=1.5)
    with pytest.raises(ef.ConfigError, match=r"margin=0\.1 goes with a remedy"):
        StabilityCallback(tiny_data, margin=0.1)
    with pytest.raises(ef.ConfigError, match=r"data must be a pair of tensors \(X, Y\), got Tensor"):
        StabilityCallback(tiny_data[0])
    with pytest.raises(
        ef.ConfigError, match=r"unknown StabilityMonitor option 'horizn'; valid options: horizon"
    ):
        StabilityCallback(tiny_data, horizn=5)

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()

    module = TwoOptimizers(mlp(), None)
    module.automatic_optimization = False
    with pytest.raises(ef.ConfigError, match="monitors one optimizer; configure_optimizers gave 2"):
        fit(module, tiny_data, StabilityCallback(tiny_data, module="net"), tmp_path, steps=1)
    module = Regression(mlp(), lambda ps: torch.optim.SGD(ps, lr=0.1))
    with pytest.raises(
        ef.ConfigError, match=r"module 'body' is not a submodule of Regression; its submodules: net"
    ):
        fit(module, tiny_data, StabilityCallback(tiny_data, module="body"), tmp_path, steps=1)
    module = Regression(mlp(), lambda ps: torch.optim.SGD(list(ps)[2:], lr=0.1))
    with pytest.raises(ef.ConfigError, match=r"steps 2 parameter tensors and module 'net' has 4"):
        fit(module, tiny_data, StabilityCallback(tiny_data, module="net"), tmp_path, steps=1)


def test_a_sharded_strategy_is_refused_by_name(tiny_data):
    class FSDPStrategy:  # what on_train_start reads of a trainer before anything else
        pass

    trainer = types.SimpleNamespace(strategy=FSDPStrategy())
    with pytest.raises(ef.ConfigError, match="strategy is FSDPStrategy; valid: SingleDeviceStrategy, DDP"):
        StabilityCallback(tiny_data).on_train_start(trainer, None)


def test_without_lightning_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)  # `import pytorch_lightning` fails
    monkeypatch.delitem(sys.modules, "edgeflow.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'edgeflow\[lightning\]'"):
        importlib.import_module("edgeflow.integrations.lightning")
