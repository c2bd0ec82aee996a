#!/usr/bin/env bash
# Quick start, part 1: set up and run the main job (alanine dipeptide demo) on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash devtools/setup_env.sh
.venv/bin/arbg demo "$@"
