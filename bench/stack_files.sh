#!/usr/bin/env bash
# Run the stack-folder benchmark as root: set-up, lab up, then bench/stack_files.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/venv.sh
source scripts/env.sh
inventory=$(.venv/bin/homelab lab up | tail -n 1)
.venv/bin/python bench/stack_files.py --inventory "$inventory" "$@"
