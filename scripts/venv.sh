#!/usr/bin/env bash
# Create .venv and install the project with its test extras. Re-installs only when
# pyproject.toml changed since the last install (a stamp holds its hash).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed-from
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "venv: up to date" >&2
  exit 0
fi
echo "venv: installing the project into .venv" >&2
python3 -m venv .venv
log=$(mktemp /tmp/homelab-pip.XXXXXX)
if ! .venv/bin/pip install -q -e '.[test]' >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "venv: pip install failed (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
.venv/bin/python -c "import prefect, asyncssh, hvac, proxmoxer, prometheus_client, deployments.cli" \
  || { echo "venv: install failed" >&2; exit 1; }
echo "$want" > "$stamp"
