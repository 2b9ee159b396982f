#!/usr/bin/env bash
# Install timestepper with its benchmark extras into .venv and run the main benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[bench]'
.venv/bin/timestepper bench gmm "$@"
