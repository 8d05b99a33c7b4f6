"""What every network problem of the zoo shares: a network initialized from the seed, evaluated on
its data set with a chosen loss, in the chosen dtype and device.

A builder's parameters, with their types and defaults, are read from its signature by
`edgeflow list` and by the checks of ``--param``; the helpers here compose that signature from the
parts (the data, the architecture) so that each part declares its parameters once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

from edgeflow.oracle import Problem
from edgeflow.utils import RUN_KEYWORDS, check_memory, dtype_name, resolve_device, resolve_dtype
from edgeflow.zoo.models import seeded_init

#: a builder's description of its problem: a constructor of the network and the data (X, Y)
Network = tuple[Callable[[], nn.Module], tuple[Tensor, Tensor]]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def network_problem(
    name: str, describe: Callable[..., Network], *, loss: str = "mse", loss_is_a_parameter: bool = True
) -> Callable[..., Problem]:
    """The problem builder ``build(*, seed, dtype, device, **params, loss=, chunk_size=None)`` of
    ``describe(*, seed, **params) -> (build_network, (X, Y))``.

    The network is built with PyTorch's default initialization drawn from ``seed``; ``chunk_size``
    bounds the examples per evaluation (memory). The builder's signature lists the description's
    parameters, then ``loss`` (unless ``loss_is_a_parameter`` is False: regression targets take MSE
    only) and ``chunk_size``.
    """

    def build(*, seed: int, dtype, device, loss: str = loss, chunk_size: int | None = None, **params):
        make_network, data = describe(seed=seed, **params)
        check_fits(make_network, dtype, device, params)
        return Problem.from_module(
            seeded_init(make_network, seed),
            data,
            loss=loss,
            dtype=dtype,
            device=device,
            chunk_size=chunk_size,
            name=name,
        )

    shared = [inspect.Parameter("chunk_size", _KEYWORD, default=None, annotation="int | None")]
    if loss_is_a_parameter:
        shared.insert(0, inspect.Parameter("loss", _KEYWORD, default=loss, annotation="str"))
    run = [inspect.Parameter(k, _KEYWORD) for k in RUN_KEYWORDS]
    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*run, *_own_parameters(describe), *shared], return_annotation="Problem"
    )
    build.__name__ = build.__qualname__ = name.replace("-", "_")
    return build


#: what a run holds per parameter, in copies of the parameter vector: the iterates of the flows, their
#: gradients and HVPs, Lanczos' vectors; a network with fewer bytes than this many copies could not run
MIN_COPIES = 4


def check_fits(make_network: Callable[[], nn.Module], dtype, device, params: dict) -> None:
    """Refuse (``ConfigError``) a network whose parameters alone, ``MIN_COPIES`` times over, exceed
    the memory available on ``device``: counted on PyTorch's meta device, which allocates nothing."""
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in make_network().parameters())
    except Exception:  # an architecture that cannot be built without data: the real build will tell
        return
    dt = resolve_dtype(dtype, torch.float32)
    given = ", ".join(f"{k}={v}" for k, v in params.items()) or "default sizes"
    check_memory(
        count * dt.itemsize * MIN_COPIES,
        resolve_device(device),
        f"the network ({given}) has {count:.3g} parameters: {MIN_COPIES} copies in {dtype_name(dt)}",
        "choose smaller sizes",
    )


def image_classifier(
    images: Callable[..., tuple[Tensor, Tensor]], architecture: Callable[..., Callable[[], nn.Module]]
) -> Callable[..., Network]:
    """The description of ``architecture`` on ``images``: ``images(*, seed, classes, **data)``
    loads ``(X, y)`` with X of shape (n, C, H, W), ``architecture(X, classes, **sizes)`` returns the
    network's constructor sized for them; the description takes the parameters of both."""
    data_params = _own_parameters(images)
    sizes = list(inspect.signature(architecture).parameters.values())[2:]  # after X and classes
    signature = inspect.Signature([inspect.Parameter("seed", _KEYWORD), *data_params, *sizes])

    def describe(*, seed: int, **params) -> Network:
        bound = signature.bind(seed=seed, **params)
        bound.apply_defaults()
        given = bound.arguments
        X, y = images(seed=seed, **{p.name: given[p.name] for p in data_params})
        return architecture(X, given["classes"], **{p.name: given[p.name] for p in sizes}), (X, y)

    describe.__signature__ = signature  # type: ignore[attr-defined]
    return describe


def _own_parameters(fn: Callable) -> list[inspect.Parameter]:
    """``fn``'s parameters other than the run keywords (seed, dtype, device)."""
    return [p for p in inspect.signature(fn).parameters.values() if p.name not in RUN_KEYWORDS]
