#!/usr/bin/env bash
# The GPU measurements of issue 9 (and the CUDA paths of issues 5 and 6) in one `device` call, under
# 5 minutes: run from the repository root on a machine with a GPU. Results land in $OUT (or
# ./gpu_out): perf.json (ratios side by side), extraction_profile.txt, loader_w*.json,
# metrics_cuda.txt, pytest_cuda.txt.
# QUICK=1 skips the CUDA tests and metrics (for a rerun after a perf-only change).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, cv2; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'opencv', cv2.__version__)" | tee -a "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"

if [ -z "${QUICK:-}" ]; then
  # 1. M3-Net's fast head == the straightforward float64 reference, and the losses, on CUDA too.
  timeout 150 python3 -m pytest -q -p no:cacheprovider \
    tests/test_m3net.py tests/test_attention.py tests/test_losses.py 2>&1 | tail -5 | tee "$OUT/pytest_cuda.txt"
  # 2. Exact metrics on CUDA at DeepFashion's evaluation size.
  timeout 60 python3 -m benchmark.metrics cuda 2>&1 | tail -5 | tee "$OUT/metrics_cuda.txt"
fi

# 3. Training step, extraction, loader and metrics side by side, then the step under CUDA graphs.
WORKERS=${WORKERS:-12}
timeout 330 python3 -m benchmark.perf --size full --compile "${COMPILE:-reduce-overhead}" --workers "$WORKERS" \
  --out "$OUT/perf.json" --profile "$OUT/extraction_profile.txt" 2>&1 | grep -v "^ *$" | tail -30
# 4. The loader alone at other worker counts (images/s; compare with perf.json's training step).
for w in ${LOADER_WORKERS:-8 16}; do
  timeout 60 python3 -m benchmark.perf --size full --only-loader --workers "$w" --out "$OUT/loader_w$w.json" 2>&1 | tail -3
done
cat "$OUT/perf.json"
