#!/usr/bin/env bash
# PDE-Refiner vs the MSE U-Net on KS at the paper's network and data scale (Lippe et al. 2023;
# the released KS config: U-Net hidden 64, 2048 train trajectories, batch 128, lr 1e-4) on one
# GPU: benchmarks/pde_refiner.py --full --device cuda. Default: 20000 iterations, the MSE U-Net
# on u(t) and the refiner (estimated 5 min on an H200, unmeasured); extra arguments go to the
# benchmark (e.g. `--iterations 20000 80000 --models 0 1 2 3` for the trend and ablations).
# Writes benchmarks/results/pde_refiner_cuda.{md,json} (copied to $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
python3 benchmarks/pde_refiner.py --full --device cuda --iterations 20000 \
    --out benchmarks/results/pde_refiner_cuda "$@"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/pde_refiner_cuda.* "$OUT"/; fi
