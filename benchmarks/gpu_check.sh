#!/usr/bin/env bash
# GPU check: the MNIST-5k ViT with GD, Edge Flow and the central flow on every GPU of the machine,
# end to end through `edgeflow run --device cuda` (under torchrun, one process per GPU, when there
# are several), then the cost tables (wall time per GD step against GD, one process; the ViT and
# the default MLP) and, with several GPUs, strong scaling 1 → NPROC GPUs. Sized to finish in well
# under 10 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with CUDA
#   DEVICE=cpu STEPS=3 N=10 WARMUP=2 bash benchmarks/gpu_check.sh            # the same path on CPU
#   DEVICE=cpu NPROC=2 STEPS=3 N=10 WARMUP=2 bash benchmarks/gpu_check.sh    # ... data-parallel (gloo)
#
# PYTHON defaults to the repository's .venv/bin/python (the README's install), else python3.
set -euo pipefail

DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}        # GD crosses 2/η near step 80 and overshoots near step 120 at these sizes
N=${N:-1000}               # MNIST-5k examples
WARMUP=${WARMUP:-150}      # cost is timed from GD's iterate at this step (inside EoS)
MLP_WARMUP=${MLP_WARMUP:-300}  # … and on the default MLP from this one (it crosses 2/η at step 170)
MLP_STEPS=${MLP_STEPS:-10} # steps timed per repeat on the default MLP
REPEATS=${REPEATS:-3}      # repeats of every timing (medians)
OUT=${OUT:-runs/gpu-check}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import edgeflow" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import edgeflow; install it as in the README or set PYTHON=..." >&2
    exit 2
fi
if [ "$DEVICE" = cpu ]; then
    NPROC=${NPROC:-1}
else
    NPROC=${NPROC:-$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")}
fi
if [ "$NPROC" -gt 1 ]; then
    EDGEFLOW=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m edgeflow)
else
    EDGEFLOW=("$PYTHON" -m edgeflow)
fi

"$PYTHON" - "$DEVICE" <<'PY'
import sys, torch
dev = sys.argv[1]
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"gpu_check: --device {dev} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "CPU"
count = torch.cuda.device_count() if dev.startswith("cuda") else 1
print(f"gpu_check: torch {torch.__version__} on {count} × {name}")
PY

"${EDGEFLOW[@]}" run --problem mnist5k-vit --device "$DEVICE" --dtype float32 \
    --param n="$N" --steps "$STEPS" --flows gd,midpoint,edge,central \
    --out "$OUT" --force --quiet --no-plots

"$PYTHON" "$REPO/benchmarks/cost.py" --problem mnist5k-vit --device "$DEVICE" --dtype float32 --param n="$N" \
    --only edge,central --steps 5 --repeats "$REPEATS" --warmup-steps "$WARMUP"

# the default problem as the suite runs it (float64): whether a vmapped pair or triple of gradients
# costs about one gradient on the GPU decides whether hvp="pair+center" at K = 2 comes under 3× GD
"$PYTHON" "$REPO/benchmarks/cost.py" --problem digits-mlp --device "$DEVICE" \
    --only edge --steps "$MLP_STEPS" --repeats "$REPEATS" --warmup-steps "$MLP_WARMUP"

if [ "$NPROC" -gt 1 ]; then
    "$PYTHON" "$REPO/benchmarks/scaling.py" --nproc "$NPROC" --device "$DEVICE" --problem mnist5k-vit \
        --param n="$N" --steps 3 --repeats "$REPEATS"
fi
