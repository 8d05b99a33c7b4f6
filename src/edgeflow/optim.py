"""Remedies for users' own models: the `mitigated` flow's as a ``torch.optim.Optimizer``
(``EdgeStableGD``), and the oscillation cap around any supported ``torch.optim`` optimizer
(``OscillationCapped``, at the end).

``EdgeStableGD`` is (full-batch or mini-batch) gradient descent that tracks the top Hessian
eigenvector u of the loss its closure returns, with one Hessian-vector product per step (double
backward through the closure's graph, the shifted power step u ← (I + ηH)u/‖·‖), and

* ``remedy="edge_capped"`` (the default): steps along Edge Flow's symmetrized gradient
  ½[∇L(w + ru) + ∇L(w − ru)] (two more closure calls per step once r has grown above rounding),
  damped along u by 1/(1 + ηρ) and with its step across u capped at (2 − margin)/ρ, ρ = uᵀHu;
  r follows Edge Flow's magnitude equation (see ``edgeflow.processes.mitigated``). It keeps GD's
  self-stabilization, which holds the sharpness near 2/η, without GD's oscillation or spikes;
* ``remedy="lr_cap"``: takes the step size min(η, (2 − margin)/ρ), so that GD is never
  unstable along u;
* ``remedy="damped"``: damps the step along u by Edge Flow's implicit factor 1/(1 + ηρ) whenever
  ηρ ≥ 2 − margin, and leaves every other direction to plain GD.

    opt = EdgeStableGD(model.parameters(), lr=0.5)
    def closure():
        opt.zero_grad()
        return loss_fn(model(X), Y)      # no .backward(): the optimizer differentiates twice
    opt.step(closure)

The closure must compute the loss from the parameters' current values: ``edge_capped`` calls it
at w ± r u.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.optimizers.torch_optim import TorchOptimizer, read_torch_optimizer, read_torch_state
from edgeflow.processes.edge import secant_resolves
from edgeflow.processes.mitigated import (
    capped_step,
    crossed_curvature,
    edge_capped_update,
    log_floor,
    power_shift,
    remember,
)
from edgeflow.remedies import OscillationCap
from edgeflow.utils import learning_rate, nonnegative_float, positive_float

OPTIMIZER_REMEDIES = ("edge_capped", "lr_cap", "damped")
CLOSURE_HINT = (
    "EdgeStableGD differentiates the closure's loss itself (twice, for a Hessian-vector product): "
    "the closure must not call backward() and the parameters must hold no .grad. Write it as "
    "`def closure(): opt.zero_grad(set_to_none=True); return loss_fn(model(X), Y)`"
)


def _described(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}{'' if value.requires_grad else ' without a graph'}"
    return type(value).__name__


class EdgeStableGD(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        remedy: str = "edge_capped",
        margin: float = 0.1,
        max_share: float = 0.25,
        seed: int = 0,
    ) -> None:
        if remedy not in OPTIMIZER_REMEDIES:
            raise invalid_choice("remedy", remedy, OPTIMIZER_REMEDIES)
        margin = nonnegative_float("margin", margin, text=False)
        if margin >= 2:
            # the cap (2 − margin)/ρ would be zero or negative: no step, or a step uphill
            raise ConfigError(
                f"margin must be in [0, 2) (the step is capped at (2 − margin)/S), got {margin!r}"
            )
        defaults = {
            "lr": learning_rate("lr", lr, text=False),
            "remedy": remedy,
            "margin": margin,
            "max_share": positive_float("max_share", max_share, text=False),
        }
        super().__init__(params, defaults)
        frozen = [i for i, p in enumerate(self._all_params()) if not p.requires_grad]
        if frozen:
            raise ConfigError(
                f"parameter {frozen[0]} does not require grad; pass only the trained ones: "
                "(p for p in model.parameters() if p.requires_grad)"
            )
        self._seed = seed
        #: the last Rayleigh quotient ρ = uᵀHu (the sharpness once u has converged) and step size
        self.rayleigh = float("nan")
        self.step_size = float("nan")
        #: ``edge_capped``'s log r (None until the first step sets it at the rounding floor)
        self.log_r: float | None = None
        self._recent: list[float] = []  # the curvatures the cap takes the largest of
        self._last_step: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """One step; ``closure`` returns the loss (with its graph, without calling backward)."""
        params = self._all_params()
        group = self.param_groups[0]
        lr, remedy, margin = group["lr"], group["remedy"], group["margin"]
        if not callable(closure):
            raise ConfigError(f"step needs a closure that returns the loss, got {type(closure).__name__}")
        with torch.enable_grad():
            loss = closure()
            if not isinstance(loss, Tensor) or loss.ndim != 0 or not loss.requires_grad:
                raise ConfigError(
                    "the closure must return the loss as a scalar tensor with its graph (computed from "
                    f"the parameters, not detached), got {_described(loss)}"
                )
            if loss.grad_fn is not None and any(p.grad is not None for p in params):
                raise ConfigError(CLOSURE_HINT)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the closure's loss is {float(loss.detach())}; the parameters are left as they are"
                )
            try:
                grads = torch.autograd.grad(loss, params, create_graph=True)
            except RuntimeError as err:
                if "backward through the graph a second time" in str(err):
                    raise ConfigError(CLOSURE_HINT) from None
                raise
            u = self._direction(params)
            hu = torch.autograd.grad(grads, params, grad_outputs=u)
        g = [gi.detach() for gi in grads]
        rho = float(sum((ui * hi).sum() for ui, hi in zip(u, hu, strict=True)))
        self.rayleigh = rho
        self._recent = remember(self._recent, rho)
        shift = power_shift(rho, lr)
        shifted = [ui + shift * hi for ui, hi in zip(u, hu, strict=True)]
        norm = torch.sqrt(sum((s * s).sum() for s in shifted))
        self._store([s / norm for s in shifted])
        if remedy == "edge_capped":
            self._edge_capped(params, closure, g, u, rho, lr, margin, group["max_share"], float(loss))
        elif remedy == "lr_cap":
            self.step_size = capped_step(lr, margin, max(self._recent))
            for p, gi in zip(params, g, strict=True):
                p.add_(gi, alpha=-self.step_size)
        else:
            along = float(sum((ui * gi).sum() for ui, gi in zip(u, g, strict=True)))
            damp = lr * rho >= 2.0 - margin
            self.step_size = lr / (1.0 + lr * rho) if damp else lr
            for p, gi, ui in zip(params, g, u, strict=True):
                p.add_(gi, alpha=-lr)
                if damp:
                    # replace the step along u, −η(uᵀg)u, by the damped −η(uᵀg)/(1 + ηρ)·u
                    p.add_(ui, alpha=lr * along - lr * along / (1.0 + lr * rho))
        return loss.detach()

    def _edge_capped(
        self,
        params: list[Tensor],
        closure: Callable[[], Tensor],
        g: list[Tensor],
        u: list[Tensor],
        rho: float,
        lr: float,
        margin: float,
        max_share: float,
        loss: float,
    ) -> None:
        w = torch.cat([p.detach().reshape(-1) for p in params])
        u_flat = torch.cat([ui.reshape(-1) for ui in u])
        if self.log_r is None:
            self.log_r = log_floor(w)
        r = math.exp(self.log_r)
        if secant_resolves(r, w):
            g_plus, g_minus = (self._gradient_at(params, u, shift, closure) for shift in (r, -r))
            g_mean = 0.5 * (g_plus + g_minus)
            kappa = float(u_flat @ (g_plus - g_minus)) / (2 * r)
        else:  # r²∇S/2 below rounding: the gradient and ρ, the limits
            g_mean, kappa = torch.cat([gi.reshape(-1) for gi in g]), rho
        self._recent[-1] = max(self._recent[-1], crossed_curvature(self._last_step, g_mean))
        w_next, self.step_size, self.log_r = edge_capped_update(
            w, g_mean, u_flat, rho, kappa, lr, margin, self.log_r, loss, max_share, max(self._recent)
        )
        self._last_step = (w_next - w, g_mean)
        offset = 0
        for p in params:
            p.copy_(w_next[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    @staticmethod
    def _gradient_at(
        params: list[Tensor], u: list[Tensor], shift: float, closure: Callable[[], Tensor]
    ) -> Tensor:
        """∇L(w + shift·u), flat, from the closure with the parameters moved and put back."""
        for p, ui in zip(params, u, strict=True):
            p.add_(ui, alpha=shift)
        try:
            with torch.enable_grad():
                grads = torch.autograd.grad(closure(), params)
        finally:
            for p, ui in zip(params, u, strict=True):
                p.sub_(ui, alpha=shift)
        return torch.cat([gi.reshape(-1) for gi in grads])

    def _direction(self, params: list[Tensor]) -> list[Tensor]:
        state = [self.state[p].get("u") for p in params]
        if any(s is None for s in state):
            gen = torch.Generator(device=params[0].device).manual_seed(self._seed)
            state = [torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device) for p in params]
            norm = torch.sqrt(sum((s * s).sum() for s in state))
            state = [s / norm for s in state]
        return state

    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _store(self, u: list[Tensor]) -> None:
        params = self._all_params()
        for p, ui in zip(params, u, strict=True):
            self.state[p]["u"] = ui.detach()


class OscillationCapped:
    """A ``torch.optim`` optimizer (SGD with or without momentum, RMSprop, Adam, AdamW) whose
    edge-of-stability oscillation is capped (``edgeflow.remedies.OscillationCap``): after the
    wrapped optimizer's own step, the step is shortened along the oscillation's direction where it
    would carry the oscillation's share of the loss past ``max_share``, and scaled across it where
    the last steps crossed a curvature past the optimizer's threshold. No oracle call: it reads the
    step, the gradient and the loss the loop already has.

        opt = OscillationCapped(torch.optim.Adam(model.parameters(), lr=1e-3))
        loss = loss_fn(model(X), Y)
        opt.zero_grad(); loss.backward(); opt.step(loss)

    The wrapped optimizer's hyper-parameters and state are read at every step (a schedule is
    followed); what edgeflow's optimizers cannot express is refused by name. The loss guard of
    ``edgeflow.remedies.CappedRun`` (retrying a step that raises the full-batch loss) needs the loss
    at the new point before the next step and is not part of this wrapper.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, max_share: float = 0.05, margin: float = 0.1
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(f"optimizer must be a torch.optim.Optimizer, got {_described(optimizer)}")
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.cap = OscillationCap(
            read_torch_optimizer(optimizer).optimizer, max_share=max_share, margin=margin
        )
        self._before: tuple[Tensor, Tensor] | None = None
        self._read: TorchOptimizer | None = None

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
        self.cap.reset()

    @torch.no_grad()
    def step(self, loss: Tensor | float) -> None:
        """The wrapped optimizer's step, capped; ``loss`` is the loss whose gradient the parameters'
        ``.grad`` hold (at the parameters before the step)."""
        self.before_step()
        self.optimizer.step()
        self.after_step(loss)

    @torch.no_grad()
    def before_step(self) -> None:
        """Remembers the parameters, their gradients and the optimizer's settings before its step
        (for a loop that calls the wrapped optimizer's ``step`` itself, as Lightning does)."""
        before = parameters_to_vector(self.params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self._before = (before, torch.cat([x.reshape(-1) for x in grads]).to(before))
        self._read = read_torch_optimizer(self.optimizer)

    @torch.no_grad()
    def after_step(self, loss: Tensor | float) -> None:
        """Caps the step the wrapped optimizer took since ``before_step``; ``loss`` as in ``step``."""
        if self._before is None or self._read is None:
            raise RuntimeError("after_step() needs before_step() before the optimizer's step")
        (before, g), read = self._before, self._read
        loss = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
        self.cap.optimizer = read.optimizer  # the learning rate of the step just taken
        state = read_torch_state(self.optimizer, self.params, read.optimizer, like=before)
        taken = self.cap.adjust(
            before, g + read.l2 * before, loss, parameters_to_vector(self.params) - before, state
        )
        vector_to_parameters(before + taken, self.params)
        self._before = self._read = None
