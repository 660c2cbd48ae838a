#!/usr/bin/env bash
# The main job on a fresh machine, as root: set up, start the simulated homelab and a
# local Prefect server, deploy the whole lab, and print the result table.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
echo "deploying $inventory"
.venv/bin/homelab deploy -i "$inventory"
