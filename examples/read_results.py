"""Reading a run's ``results.h5`` with h5py and numpy — and with pandas, if it is installed.

    python examples/read_results.py runs/digits-mlp-20260101-120000   # a run directory
    python examples/read_results.py path/to/results.h5
    python examples/read_results.py            # makes a small run (zhu, ~10 s) and reads that

The file (docs/results-file.md has the full layout): one group per flow with 1-D datasets over its
records (``step``, ``train_loss``, ``sharpness``, the flow's own fields) and a JSON attribute
``info`` (costs, divergence); a group ``distances`` with ``<a>-<b>`` datasets over its own ``step``;
root attributes ``lr``, ``config`` (JSON), ``complete`` and ``resumed_from``. The file can be read
while a run is still writing it: open it with ``swmr=True``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import h5py
import numpy as np

import edgeflow as ef

QUICK = bool(os.environ.get("EDGEFLOW_EXAMPLES_QUICK"))


def small_run(out: Path) -> Path:
    """GD, its midpoints, Edge Flow and gradient flow on the 2-D loss ¼(x²y² − 1)²."""
    ef.compare(
        ef.make_problem("zhu"),
        lr=0.15,
        steps=20 if QUICK else 150,
        flows=["gd", "midpoint", "edge", "gradient"],
        out=out,
        force=True,
    )
    return out / "results.h5"


def with_h5py(path: Path) -> None:
    with h5py.File(path, "r", swmr=True) as f:
        lr = float(f.attrs["lr"])
        config = json.loads(f.attrs["config"])
        print(
            f"{path}: η = {lr:g} (2/η = {2 / lr:.4g}), problem {config.get('problem')!r}, "
            f"{config.get('steps')} steps, complete: {bool(f.attrs['complete'])}"
        )
        for name, group in f.items():
            if name == "distances":
                continue
            fields = ", ".join(f"{k} {group[k].shape}" for k in group)
            info = json.loads(group.attrs["info"])
            print(f"  {name}: {fields}; cost {info.get('cost')}, diverged at {info.get('diverged_at')}")

        # GD's sharpness at its midpoints (NaN at the records where it was not measured)
        steps = f["midpoint/step"][:]
        sharpness = f["midpoint/sharpness"][:]
        above = np.flatnonzero(np.nan_to_num(sharpness, nan=-np.inf) >= 2 / lr)
        crossing = steps[above[0]] if above.size else None
        print(f"  GD's midpoint sharpness first at or above 2/η at step {crossing}")

        # Distances between flows live on their own step axis; divide by how far GD's center has
        # moved from w₀ for the relative distance that summary.md reports (undefined at step 0).
        distances = f["distances"]
        moved = distances["midpoint-w0"][:]
        for pair in ("edge-midpoint", "gradient-midpoint"):
            if pair in distances:
                with np.errstate(divide="ignore", invalid="ignore"):
                    relative = distances[pair][:] / moved
                print(f"  ‖{pair.replace('-', ' − ')}‖ / ‖w* − w₀‖: median {np.nanmedian(relative):.3g}")


def with_pandas(path: Path) -> None:
    try:
        import pandas as pd
    except ImportError:
        print("pandas is not installed (pip install pandas): skipping the DataFrame view")
        return
    frames = {}
    with h5py.File(path, "r", swmr=True) as f:
        for name, group in f.items():
            # params are records × d (and have their own step axis, params_step): not a column
            columns = {k: group[k][:] for k in group if group[k].ndim == 1 and k != "params_step"}
            frames[name] = pd.DataFrame(columns).set_index("step")
    # one wide table: a column per (flow, field), a row per recorded step
    table = pd.concat(frames, axis=1)
    print(table[[("midpoint", "sharpness"), ("edge", "sharpness"), ("edge", "magnitude")]].dropna().tail())
    print(table.xs("train_loss", axis=1, level=1).describe().loc[["min", "max"]])


def main() -> None:
    parser = argparse.ArgumentParser(description="read a run's results.h5")
    parser.add_argument(
        "run", nargs="?", help="a run directory or its results.h5 (default: make a small run)"
    )
    args = parser.parse_args()
    if args.run is None:
        path = small_run(Path("runs/example-read-results"))
    else:
        path = Path(args.run)
        path = path / "results.h5" if path.is_dir() else path
    with_h5py(path)
    with_pandas(path)
    # edgeflow's own reader gives the same arrays: ef.load(path)["edge"]["magnitude"]
    res = ef.load(path, params=False)
    print(f"ef.load: {res}; fidelity of edge: distance median {res.metrics()['edge']['distance_median']:.3g}")


if __name__ == "__main__":
    main()
