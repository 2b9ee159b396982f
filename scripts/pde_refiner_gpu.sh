#!/usr/bin/env bash
# PDE-Refiner vs the MSE U-Net on KS at the paper's scale (Lippe et al. 2023): U-Net hidden 64,
# mults 1-2-2-4, 2048 train trajectories, batch 128, lr 1e-4, 20k and 80k iterations, on one GPU.
# Writes benchmarks/results/pde_refiner_cuda.{md,json} (copied to $OUT when set). Budget: about
# 1 GPU-hour on an H200 for both budgets and the four models; pass e.g. `--iterations 20000` to
# shorten (each extra argument goes to benchmarks/pde_refiner.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
python3 benchmarks/pde_refiner.py --full --device cuda --out benchmarks/results/pde_refiner_cuda "$@"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/pde_refiner_cuda.* "$OUT"/; fi
