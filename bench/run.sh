#!/usr/bin/env bash
# Run the benchmark as root: set-up, lab up, Prefect server up, then bench/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
.venv/bin/python bench/bench.py --inventory "$inventory" "$@"
