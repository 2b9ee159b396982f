#!/usr/bin/env bash
# The GPU measurements a CPU session cannot make, as one short run (about 3-5 minutes) for a
# session that is lent a device machine (see the device tool's README):
#   - issue 4: per-step cost of the SDE samplers vs the ODE step (benchmarks/stochastic.py);
#   - issue 6: the batched neural-ODE rows with wall time and peak GPU memory (benchmarks/ode.py).
# Needs torch with CUDA, and torchdiffeq (torchode and k-diffusion are optional) on that machine.
# Writes benchmarks/results/stochastic_cuda.md and ode_cuda.md; copy them back and run
# `python benchmarks/report.py` here.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python3 benchmarks/stochastic.py --device cuda --only overhead
python3 benchmarks/ode.py --gpu
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*_cuda.md "$OUT"/; fi
