# Sourced by demo.sh and bench/run.sh: set up the machine, start the simulated homelab and
# the local Prefect server, and set $inventory to the lab inventory's path.
bash scripts/setup.sh
bash scripts/venv.sh
source scripts/env.sh
inventory=$(.venv/bin/homelab lab up | tail -n 1)
.venv/bin/homelab server up
export PREFECT_API_URL=http://127.0.0.1:4200/api
