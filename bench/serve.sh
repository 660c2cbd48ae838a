#!/usr/bin/env bash
# Run the control-process benchmark as root: set-up, lab up, Prefect server up, then bench/serve.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
.venv/bin/python bench/serve.py --inventory "$inventory" "$@"
