"""A live ``torch.optim`` optimizer read as one of edgeflow's optimizers, with its state as a flat vector.

``read_torch_optimizer(opt)`` maps the optimizer's class and hyper-parameters to the edgeflow
optimizer with the same discrete map (``SGD`` → ``gd``, ``momentum`` or ``nesterov``; ``RMSprop`` →
``rmsprop`` without bias correction; ``Adam``/``AdamW`` → ``adam``/``adamw``), and
``read_torch_state(opt, params, optimizer)`` its per-parameter state (``momentum_buffer``,
``exp_avg``, ``exp_avg_sq``, ``square_avg``, ``step``) as edgeflow's state over the flat vector of
``params``. Both are read again at every call, so a learning-rate schedule is followed.

What has no edgeflow counterpart is refused with its value: SGD's dampening, RMSprop's momentum and
centered variant, AMSGrad, ``maximize``, coupled weight decay of Adam and RMSprop, and parameter groups
with different hyper-parameters. SGD's coupled weight decay λ (``weight_decay``) is the L2 term
λ‖w‖²/2 of the loss the step descends, whose Hessian adds λ to every eigenvalue: it is returned as
``l2`` so that the caller can add ηλ to the effective sharpness.

torch's state after ``step()`` has seen the gradient at the previous iterate; edgeflow's state at an
iterate has seen the gradient there (``edgeflow.optimizers.base``). Read after a step, the state is
that of the step just taken, and so is the preconditioner built from it: one step behind, which for
ν's slow average (β₂ = 0.999) is a change of order 1 − β₂.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from edgeflow.errors import ConfigError
from edgeflow.optimizers import make_optimizer
from edgeflow.optimizers.base import Optimizer, State

#: the torch.optim classes read here, by the name of the edgeflow family they map to
SUPPORTED = ("SGD", "RMSprop", "Adam", "AdamW")


@dataclasses.dataclass(frozen=True)
class TorchOptimizer:
    """An edgeflow optimizer with the same map as a torch one, and SGD's coupled L2 coefficient."""

    optimizer: Optimizer
    l2: float = 0.0


def _refuse(cls: str, key: str, value: object, valid: str) -> ConfigError:
    return ConfigError(
        f"torch.optim.{cls} with {key}={value!r} is not modelled by edgeflow's optimizers; valid: {valid}"
    )


def _group(opt: torch.optim.Optimizer) -> dict:
    """The hyper-parameters of the optimizer's single (or uniform) parameter group."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    first = groups[0]
    for index, group in enumerate(groups[1:], start=1):
        for key, value in group.items():
            if key in first and _value(value) != _value(first[key]):
                raise ConfigError(
                    f"parameter group {index} has {key}={_value(value)!r} and group 0 {key}="
                    f"{_value(first[key])!r}: the monitor models one optimizer, so every group must share "
                    "its hyper-parameters"
                )
    return first


def _value(value: object) -> object:
    return float(value) if isinstance(value, Tensor) else value


def read_torch_optimizer(opt: torch.optim.Optimizer) -> TorchOptimizer:
    """The edgeflow optimizer whose discrete map is ``opt``'s (see the module docstring)."""
    if not isinstance(opt, torch.optim.Optimizer):
        raise ConfigError(f"optimizer must be a torch.optim.Optimizer, got {type(opt).__name__}")
    cls = type(opt).__name__
    group = _group(opt)
    lr = float(group["lr"])
    if group.get("maximize", False):
        raise _refuse(cls, "maximize", True, "maximize=False")
    if isinstance(opt, torch.optim.SGD):
        beta, l2 = float(group["momentum"]), float(group["weight_decay"])
        if beta == 0:
            if group["nesterov"]:
                raise _refuse(cls, "nesterov", True, "nesterov only with momentum > 0")
            return TorchOptimizer(make_optimizer("gd", lr), l2)
        if float(group["dampening"]) != 0:
            raise _refuse(cls, "dampening", group["dampening"], "dampening=0")
        name = "nesterov" if group["nesterov"] else "momentum"
        return TorchOptimizer(make_optimizer(name, lr, {"beta": beta}), l2)
    if isinstance(opt, torch.optim.RMSprop):
        for key in ("momentum", "weight_decay"):
            if float(group[key]) != 0:
                raise _refuse(cls, key, group[key], f"{key}=0")
        if group["centered"]:
            raise _refuse(cls, "centered", True, "centered=False")
        options = {"beta2": float(group["alpha"]), "eps": float(group["eps"]), "bias_correction": False}
        return TorchOptimizer(make_optimizer("rmsprop", lr, options))
    if isinstance(opt, torch.optim.Adam):  # AdamW is an Adam with decoupled weight decay
        if group["amsgrad"]:
            raise _refuse(cls, "amsgrad", True, "amsgrad=False")
        beta1, beta2 = (float(b) for b in group["betas"])
        options = {"beta1": beta1, "beta2": beta2, "eps": float(group["eps"])}
        decay = float(group["weight_decay"])
        if group.get("decoupled_weight_decay", False) or isinstance(opt, torch.optim.AdamW):
            return TorchOptimizer(make_optimizer("adamw", lr, {**options, "weight_decay": decay}))
        if decay != 0:
            raise _refuse(cls, "weight_decay", group["weight_decay"], "0, or torch.optim.AdamW")
        return TorchOptimizer(make_optimizer("adam", lr, options))
    raise ConfigError(
        f"torch.optim.{cls} is not modelled by edgeflow's optimizers; valid: {', '.join(SUPPORTED)}"
    )


#: edgeflow's state entries and the torch state they are read from
_STATE_KEYS = {"b": ("momentum_buffer",), "m": ("exp_avg",), "nu": ("exp_avg_sq", "square_avg")}


def read_torch_state(
    opt: torch.optim.Optimizer, params: Sequence[Tensor], optimizer: Optimizer, like: Tensor
) -> State:
    """``opt``'s state over the flat vector of ``params`` (in their order) in edgeflow's form for
    ``optimizer``, with ``like``'s dtype and device. Parameters the optimizer has not stepped yet have
    the state edgeflow starts from (``init``), as torch's buffers are then absent."""
    state = optimizer.init(like)
    steps = set()
    for key in state:
        if key == "t":
            continue
        names = _STATE_KEYS[key]
        parts = []
        for p in params:
            entry = opt.state.get(p, {})
            found = next((entry[n] for n in names if entry.get(n) is not None), None)
            parts.append(like.new_zeros(p.numel()) if found is None else found.detach().reshape(-1).to(like))
            if "step" in entry:
                steps.add(float(entry["step"]))
        state[key] = torch.cat(parts)
    if "t" in state:
        if len(steps) > 1:
            raise ConfigError(
                f"the optimizer's parameters have taken different numbers of steps: {sorted(steps)}"
            )
        state["t"] = steps.pop() if steps else 0.0
    return state
