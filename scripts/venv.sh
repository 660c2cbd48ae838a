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
.venv/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import prefect, asyncssh, hvac, proxmoxer, prometheus_client, deployments.cli" \
  || { echo "venv: install failed" >&2; exit 1; }
echo "$want" > "$stamp"
