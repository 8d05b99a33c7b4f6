"""Under torchrun: `full DIR` runs to the end; `stop DIR` sends SIGINT to rank 1 alone at step 7
(every rank must still stop at the same step boundary); `resume DIR` continues the stopped run."""

import os
import signal
import sys

import torch

import edgeflow as ef
from edgeflow import distributed as parallel
from edgeflow.runner import Run

torch.set_num_threads(1)
mode, out = sys.argv[1], sys.argv[2]
parallel.init_from_env(None)
problem = ef.make_problem("digits-mlp", n=61, width=16, seed=2)
settings = dict(save_params=True, sharpness_every=3, checkpoint_every=5)
flows = [
    "gd",
    "midpoint",
    "edge",
]  # the central flow under torchrun: test_cli_under_torchrun_equals_one_process
if mode == "stop":
    original = Run.step_all

    def step_all(self, k):
        if k == 7 and parallel.rank() == 1:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, k)

    Run.step_all = step_all
try:
    if mode == "resume":
        ef.resume(out, load_result=False)
    else:
        ef.compare(problem, 1.0, 14, flows, out=out, load_result=False, **settings)
except ef.RunInterrupted as stop:
    print(f"rank {parallel.rank()} stopped at {stop.step}", flush=True)
parallel.leave()
parallel.exit_process(0)
