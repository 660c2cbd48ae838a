#!/usr/bin/env bash
# Run the benchmark as root: set-up, lab up, Prefect server up, then bench/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/venv.sh
source scripts/env.sh
inventory=$(.venv/bin/homelab lab up | tail -n 1)
.venv/bin/homelab server up
export PREFECT_API_URL=http://127.0.0.1:4200/api
.venv/bin/python bench/bench.py --inventory "$inventory" "$@"
