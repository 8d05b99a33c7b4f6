#!/usr/bin/env bash
# GPU check: the MNIST-5k ViT with GD, Edge Flow and the central flow on a GPU, end to end through
# `edgeflow run --device cuda`, then the cost table (wall time per GD step against GD, same process).
# Sized to finish in well under 10 minutes on one H100. Prints the fidelity and cost tables.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with CUDA
#   DEVICE=cpu STEPS=3 N=10 WARMUP=2 bash benchmarks/gpu_check.sh   # a dry run of the same path on CPU
set -euo pipefail

DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}        # GD crosses 2/η near step 80 and overshoots near step 120 at these sizes
N=${N:-1000}               # MNIST-5k examples
WARMUP=${WARMUP:-150}      # cost is timed from GD's iterate at this step (inside EoS)
OUT=${OUT:-runs/gpu-check}
PYTHON=${PYTHON:-python}

"$PYTHON" - "$DEVICE" <<'PY'
import sys, torch
dev = sys.argv[1]
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"gpu_check: --device {dev} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "CPU"
print(f"gpu_check: torch {torch.__version__} on {name}")
PY

"$PYTHON" -m edgeflow.cli run --problem mnist5k-vit --device "$DEVICE" --dtype float32 \
    --param n="$N" --steps "$STEPS" --flows gd,midpoint,edge,central \
    --out "$OUT" --force --quiet --no-plots

"$PYTHON" benchmarks/cost.py --problem mnist5k-vit --device "$DEVICE" --dtype float32 --param n="$N" \
    --only edge,central --steps 5 --repeats 3 --warmup-steps "$WARMUP"
