#!/usr/bin/env bash
# Quick start, part 2: set up and run the test suite (the default, fast suite; add -m slow for the long one).
# Also sets up .venv-openmm-torch (torch 2.12.1 + openmm-torch, ~4.5 GB once) for the TorchForce
# tests; ARBG_SKIP_OPENMM_TORCH=1 skips that environment (those tests are then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash devtools/setup_env.sh
if [ "${ARBG_SKIP_OPENMM_TORCH:-0}" != "1" ]; then
  bash devtools/setup_openmm_torch_env.sh
fi
.venv/bin/python -m pytest tests "$@"
