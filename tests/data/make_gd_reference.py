"""Writes tests/data/gd_reference.npz: every flow's records on two small problems, as the code before
the optimizer layer computed them (commit cfc3dcb). tests/test_optimizers.py checks that runs with the
default optimizer (GD) still give these numbers bit for bit on the machine that wrote them, and to
rounding elsewhere. Run from the repository root: python tests/data/make_gd_reference.py
"""

import platform
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef

CASES = [("digits-mlp", {"n": 32, "width": 8, "depth": 2}, 0.5, 24), ("zhu", {}, 0.15, 24)]
FLOWS = ["gd", "midpoint", "edge", "gradient", "modified", "central", "mitigated"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fingerprint() -> str:
    return f"torch {torch.__version__}; {cpu_model()}; threads {torch.get_num_threads()}"


def records(name: str, params: dict, lr: float, steps: int) -> dict[str, np.ndarray]:
    problem = ef.make_problem(name, **params)
    res = ef.compare(problem, lr, steps, FLOWS, sharpness_every=5, save_params=True, params_every=15)
    out = {}
    for flow in FLOWS:
        for key, value in res[flow].items():
            out[f"{name}/{flow}/{key}"] = np.asarray(value)
    for key, value in res.distances.items():
        out[f"{name}/distances/{key}"] = np.asarray(value)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    arrays = {"fingerprint": np.array(fingerprint())}
    for case in CASES:
        arrays.update(records(*case))
    np.savez_compressed(Path(__file__).with_name("gd_reference.npz"), **arrays)
