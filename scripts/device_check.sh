#!/usr/bin/env bash
# The GPU checks and measurements a CPU session cannot make, as one short run (about 5-8 minutes)
# for a session that is lent a device machine (see the device tool's README):
#   1. scripts/cuda_check.py: the loop's contracts on CUDA (results = CPU, no host sync in a
#      sampling step, adaptive and per-sample solves, compiled steps: one graph per kind of step;
#      implicit solvers, the torchdiffeq drop-in and neural CDE paths on the device);
#   2. benchmarks/compiled.py --device cuda: compiled vs eager step time on the GPU;
#   3. benchmarks/stochastic.py --device cuda --only overhead: the SDE samplers' step cost vs the
#      ODE step (issue 4), and benchmarks/ode.py --gpu: batched neural ODEs with peak GPU memory;
#   4. scripts/pde_refiner_gpu.sh: PDE-Refiner vs the MSE U-Net on KS at the paper's network and
#      data scale (issue 18; estimated ~5 minutes, unmeasured; skip with SKIP_PDE_REFINER=1).
# Needs torch with CUDA, and torchdiffeq (torchode and k-diffusion are optional) for 3. Each part
# runs even if an earlier one failed; the script fails if any did. Writes
# benchmarks/results/{compiled,stochastic,ode,pde_refiner}_cuda.md (copied to $OUT when set, with the log);
# copy them back and run `python benchmarks/report.py` here.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
failed=0
run() { echo "== $*"; "$@" || { echo "FAILED ($?): $*"; failed=1; }; }
run python3 scripts/cuda_check.py --device cuda
run python3 benchmarks/compiled.py --device cuda --repeats 5
run python3 benchmarks/stochastic.py --device cuda --only overhead
run python3 benchmarks/ode.py --gpu
[ "${SKIP_PDE_REFINER:-0}" = 1 ] || run bash scripts/pde_refiner_gpu.sh --models 0 3
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*_cuda.md "$OUT"/ 2>/dev/null; fi
exit $failed
