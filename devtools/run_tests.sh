#!/usr/bin/env bash
# Quick start, part 2: set up and run the test suite (the default, fast suite; add -m slow for the long one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash devtools/setup_env.sh
.venv/bin/python -m pytest tests "$@"
