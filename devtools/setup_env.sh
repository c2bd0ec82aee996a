#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install openmm-arbg into it.
# Needs only Python >= 3.10 with venv and pip; the package registry must be reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.arbg-installed
want=$(cat devtools/requirements/*.txt setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r devtools/requirements/test.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
