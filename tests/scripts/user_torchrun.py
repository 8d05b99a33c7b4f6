"""A user's own script: their model and data through Problem.from_module, run with or without
torchrun (the API shards the examples by itself when a process group is initialized)."""

import sys

import torch
import torch.distributed as dist

import edgeflow as ef
from edgeflow import distributed as parallel

torch.set_num_threads(1)
if "--distributed" in sys.argv:
    dist.init_process_group("gloo")
gen = torch.Generator().manual_seed(0)
X = torch.randn(37, 6, generator=gen, dtype=torch.float64)  # an odd number of examples
y = torch.arange(37) % 3
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
problem = ef.Problem.from_module(model, (X, y), loss="mse", chunk_size=5)
# the central and modified flows under torchrun are checked by the CLI test (test_distributed.py);
# sharpness every 3rd step keeps it short
flows = ["gd", "midpoint", "edge"]
res = ef.compare(problem, 1.5, 15, flows, save_params=True, sharpness_every=3)
if not dist.is_initialized() or dist.get_rank() == 0:
    res.config["shard"] = problem.info["shard"]
    res.save(sys.argv[1])
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
parallel.exit_process(0)
