#!/usr/bin/env bash
# The main job on a fresh machine, as root: set up, start the simulated homelab and a
# local Prefect server, deploy the whole lab, and print the result table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/venv.sh
source scripts/env.sh
inventory=$(.venv/bin/homelab lab up | tail -n 1)
.venv/bin/homelab server up
echo "deploying $inventory"
.venv/bin/homelab deploy -i "$inventory"
