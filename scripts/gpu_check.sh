#!/usr/bin/env bash
# The GPU measurements of issue 9 (and the CUDA paths of issues 5 and 6) in one `device` call, well
# under 5 minutes: run from the repository root on a machine with a GPU. Results land in $OUT
# (or ./gpu_out): perf.json (ratios side by side), metrics_cuda.json, the CUDA equivalence checks.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"

# 1. M3-Net's fast head == the straightforward float64 reference, and the losses, on CUDA too.
timeout 150 python3 -m pytest -q -p no:cacheprovider \
  tests/test_m3net.py tests/test_attention.py tests/test_losses.py 2>&1 | tail -5 | tee "$OUT/pytest_cuda.txt"

# 2. Exact metrics on CUDA at DeepFashion's evaluation size.
timeout 60 python3 -m benchmark.metrics cuda 2>&1 | tail -5 | tee "$OUT/metrics_cuda.txt"

# 3. Training step, extraction, loader and metrics side by side (eager, then torch.compile).
timeout 330 python3 -m benchmark.perf --size full --compile --workers 12 --out "$OUT/perf.json" 2>&1 | tail -40
cat "$OUT/perf.json"
