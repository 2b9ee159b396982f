#!/usr/bin/env bash
# Install timestepper with its test extras into .venv and run the linter, the type checker and
# the test suite (all of it: about two minutes on 2 cores; `-m "not slow"` skips the heaviest tests).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch first: a CPU wheel that this machine has on disk; a bare "torch" requirement would pull CUDA.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'
# k-diffusion's metadata pulls torchvision and a CUDA torch: install it alone, without dependencies.
.venv/bin/pip install -q --no-deps k-diffusion==0.1.1.post1
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy  # the layers below the fronts: core, diffusion, solvers, loop (pyproject's [tool.mypy])
.venv/bin/python -m pytest -q -n 2 "$@"
