#!/usr/bin/env bash
# Run the webhook receiver benchmark: its own Prefect server and receiver, loopback only.
# Needs no root and no lab. Arguments go to bench/webhook.py (--rate, --duration, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/venv.sh
source scripts/env.sh
.venv/bin/python bench/webhook.py "$@"
