"""Results of a comparison: per-flow records over time, distances between flows, HDF5 storage.

Layout of ``results.h5`` (SPEC section 7): one group per flow with 1-D datasets over records
(``step``, ``train_loss``, ``sharpness``, the flow's own fields) and ``params`` (records × d) when
saved; the group's ``info`` attribute is JSON (costs, divergence, options). Group ``distances``
holds ``<a>-<b>`` datasets over the shared ``step`` dataset. Root attributes: ``lr``, ``config``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

FORMAT = "edgeflow-results/1"
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
        """Fidelity of every flow against GD (SPEC section 5); see ``edgeflow.metrics.fidelity``."""
        from edgeflow.metrics import fidelity

        return fidelity(self)

    @property
    def threshold(self) -> float:
        """The stability threshold 2/η."""
        return 2.0 / self.lr

    def save(self, path: str | os.PathLike) -> Path:
        """Write HDF5 to a temporary file, then rename: a crash never leaves a half-written file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["format"] = FORMAT
            f.attrs["lr"] = self.lr
            f.attrs["config"] = json.dumps(self.config)
            for name, record in self.flows.items():
                g = f.create_group(name, track_order=True)
                g.attrs["info"] = json.dumps(record.info)
                for field, values in record.items():
                    g.create_dataset(field, data=np.asarray(values))
            g = f.create_group(DISTANCES, track_order=True)
            for key, values in self.distances.items():
                g.create_dataset(key, data=np.asarray(values))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{path} is not an edgeflow results file (format {FORMAT})")
            flows = {}
            distances: dict[str, np.ndarray] = {}
            for name, g in f.items():
                data = {field: np.asarray(ds[()]) for field, ds in g.items()}
                if name == DISTANCES:
                    distances = data
                else:
                    flows[name] = FlowRecord(data, json.loads(g.attrs["info"]))
            return cls(float(f.attrs["lr"]), flows, distances, json.loads(f.attrs["config"]))


def load(path: str | os.PathLike) -> Result:
    """Read a ``results.h5`` written by ``Result.save``."""
    return Result.load(path)
