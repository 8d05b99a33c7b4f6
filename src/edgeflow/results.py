"""Results of a comparison: per-flow records over time and distances between flows.

``res[flow][field]`` are numpy arrays over that flow's records; ``res.distances`` holds
``‖a − b‖`` for pairs of flows over its ``step`` array. The file format is in ``edgeflow.storage``.

This module holds the data; ``edgeflow.metrics`` measures it (and names these classes only in its
type hints, so the two do not import each other).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeflow.metrics import fidelity

DISTANCES = "distances"


class FlowRecord(dict):
    """``field -> numpy array`` over this flow's records, plus ``info`` (costs, divergence)."""

    def __init__(self, data: dict[str, np.ndarray], info: dict | None = None) -> None:
        super().__init__(data)
        self.info: dict = dict(info or {})

    def __missing__(self, key: str) -> np.ndarray:
        raise KeyError(f"no field {key!r}; this flow recorded: {', '.join(self)}")


class Result:
    """``res[flow][field]`` numpy arrays; ``res.distances['edge-midpoint']``; ``res.save(path)``."""

    def __init__(
        self,
        lr: float,
        flows: dict[str, FlowRecord],
        distances: dict[str, np.ndarray],
        config: dict | None = None,
    ) -> None:
        self.lr = float(lr)
        self.flows = flows
        self.distances = distances
        self.config = dict(config or {})
        #: whether the run reached its last step (False for an interrupted or killed run)
        self.complete = True
        #: steps at which an interrupted run was resumed
        self.resumed_from: list[int] = []

    def __getitem__(self, flow: str) -> FlowRecord:
        if flow not in self.flows:
            raise KeyError(f"no flow {flow!r} in this result; it has: {', '.join(self.flows)}")
        return self.flows[flow]

    def __contains__(self, flow: object) -> bool:
        return flow in self.flows

    def __iter__(self) -> Iterator[str]:
        return iter(self.flows)

    def __repr__(self) -> str:
        return f"Result(lr={self.lr}, flows={list(self.flows)})"

    def metrics(self) -> dict[str, dict]:
        """Fidelity of every flow against GD; see ``edgeflow.metrics.fidelity``."""
        return fidelity(self)

    @property
    def optimizer(self) -> str:
        """The optimizer that flow ``gd`` ran and the models modelled (GD for older runs)."""
        return str(self.config.get("optimizer", "gd"))

    @property
    def preconditioned(self) -> bool:
        """Whether stability is read from the effective sharpness λ₁(P⁻¹H) rather than the sharpness."""
        return self.optimizer != "gd"

    @property
    def sharpness_field(self) -> str:
        """The record compared with ``threshold``: ``sharpness`` for GD, ``effective_sharpness``
        (λ₁(P⁻¹H)) for the other optimizers."""
        return "effective_sharpness" if self.preconditioned else "sharpness"

    @property
    def threshold(self) -> float:
        """The stability threshold of ``sharpness_field``: 2/η on the sharpness for GD, the
        optimizer's threshold on λ₁(P⁻¹H) otherwise."""
        return float(self.config.get("threshold", 2.0)) if self.preconditioned else 2.0 / self.lr

    @property
    def threshold_label(self) -> str:
        """How tables and figures name the threshold."""
        return "the threshold" if self.preconditioned else "2/η"

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``results.h5`` (temporary file, then rename: a crash never leaves a half-written file)."""
        from edgeflow.storage import save

        return save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, params: bool = True) -> Result:
        from edgeflow.storage import load

        return load(path, params=params)


def load(path: str | os.PathLike, *, params: bool = True) -> Result:
    """Read a ``results.h5`` (or a run directory's): complete, partial, or still being written."""
    return Result.load(path, params=params)
