#!/usr/bin/env bash
# Create (or reuse) .venv-openmm-torch: openmm-arbg with torch 2.12.1 and openmm-torch (TorchForce),
# used by tests/test_openmm_torch.py. About 4.5 GB of downloads the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-openmm-torch/bin/python ]; then
  "$PYTHON" -m venv .venv-openmm-torch
fi
stamp=.venv-openmm-torch/.arbg-installed
want=$(cat devtools/requirements/base.txt devtools/requirements/openmm-torch.txt setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv-openmm-torch/bin/python -m pip install --quiet --upgrade pip
  .venv-openmm-torch/bin/python -m pip install --quiet -r devtools/requirements/openmm-torch.txt
  .venv-openmm-torch/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
