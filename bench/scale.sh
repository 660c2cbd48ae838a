#!/usr/bin/env bash
# The scale benchmark as root: set-up, lab, Prefect server, then bench/scale.py (args pass on,
# e.g. --hosts 3 10 30 --rounds 3). Leaves the lab at its 3 hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
trap '.venv/bin/homelab lab up >/dev/null' EXIT
.venv/bin/python bench/scale.py "$@"
