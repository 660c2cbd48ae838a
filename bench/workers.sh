#!/usr/bin/env bash
# Worker mode against SSH mode, as root, on the lab: a Prefect server on the lab bridge (auth on),
# a worker in each host's namespace, then a fresh deploy and a no-op in each mode: all SSH, vps
# through its worker (mixed), every host through its worker. Prints the CLI's wall time and
# the run's own wall time (the report's wall_s) per case. A worker deploy starts once its
# hosts' standby runs are up (as in use, where deploys are minutes apart); the last case is a
# no-op right after another, when the successors are still starting.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
work=$(mktemp -d /tmp/homelab-bench-workers.XXXXXX)
export HOMELAB_HOME=$work PREFECT_HOME=$work/prefect HOMELAB_WORKER_KEYS=$work/keys
port=4391
trap '.venv/bin/python -c "from lab import manager; from tasks.host_commands.worker import stop_supervised
for h in (\"vps\", \"thinkpad\", \"rtx1080\"): manager.exec_on(h, stop_supervised(\"/root\"))"
      PREFECT_API_URL= .venv/bin/homelab server down >/dev/null; rm -rf "$work"' EXIT
PREFECT_API_URL= .venv/bin/homelab server up --host 10.203.0.1 --port $port >/dev/null
export PREFECT_API_URL=http://10.203.0.1:$port/api
variant() {  # variant NAME HOST=MODE...
  local dir=$work/$1; shift
  git clone -q "$(dirname "$inventory")" "$dir" && git -C "$dir" checkout -q -f v1
  .venv/bin/python - "$dir/homelab.yaml" "$@" <<'PY'
import sys, yaml
path, modes = sys.argv[1], dict(a.split("=") for a in sys.argv[2:])
data = yaml.safe_load(open(path))
for host, mode in modes.items():
    data["hosts"][host]["dispatch"] = mode
open(path, "w").write(yaml.safe_dump(data, sort_keys=False))
PY
  echo "$dir/homelab.yaml"
}
ssh=$(variant ssh)
mixed=$(variant mixed vps=worker)
workers=$(variant workers vps=worker thinkpad=worker rtx1080=worker)
for h in vps thinkpad rtx1080; do
  .venv/bin/homelab worker install -i "$workers" --host "$h" --python "$PWD/.venv/bin/python"
done
run() {  # run LABEL INVENTORY
  local start end
  start=$(date +%s.%N)
  .venv/bin/homelab deploy -i "$2" --yes --json > "$work/out.json" 2>/dev/null || true
  end=$(date +%s.%N)
  .venv/bin/python - "$1" "$start" "$end" "$work/out.json" <<'PY'
import json, sys
label, start, end, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
report = json.load(open(path))
results = sorted({s["result"] for s in report.get("stacks", [])})
print(f"{label:<22} CLI {end - start:6.1f} s   run {report.get('wall_s', float('nan')):6.1f} s   {results}")
PY
}
ready() {  # ready HOST...: each host's standby run is Running
  [ "$#" -gt 0 ] || return 0
  PREFECT_API_AUTH_STRING=$(cat "$work/prefect-auth") .venv/bin/python - "$@" <<'PY'
import asyncio, sys, time
from prefect.client.orchestration import get_client
from tasks.engine.worker_standby import open_standbys
async def main(hosts):
    deadline = time.monotonic() + 120
    async with get_client() as client:
        while time.monotonic() < deadline:
            runs = {h: [r for r in await open_standbys(client, h) if r.state.is_running()] for h in hosts}
            if all(runs.values()):
                return
            await asyncio.sleep(0.5)
    sys.exit(f"standby runs not up after 120 s: {[h for h, r in runs.items() if not r]}")
asyncio.run(main(sys.argv[1:]))
PY
}
declare -A hosts=([ssh]="" [mixed]="vps" [workers]="vps thinkpad rtx1080")
for mode in ssh mixed workers; do
  .venv/bin/homelab lab reset >/dev/null
  ready ${hosts[$mode]}
  run "$mode fresh" "${!mode}"
  ready ${hosts[$mode]}
  run "$mode no-op" "${!mode}"
done
run "workers no-op again" "$workers"  # back to back: the standbys are still starting
