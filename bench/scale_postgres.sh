#!/usr/bin/env bash
# The scale benchmark against a Prefect server on PostgreSQL: a throw-away Debian cluster on
# 127.0.0.1 (its own password, port and directory), `homelab server up --database` in its own
# HOMELAB_HOME, then bench/scale.py --label postgresql (args pass on, e.g. --hosts 3 30).
# Everything it made is stopped and removed on exit; the lab is left at its 3 hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
root=$(mktemp -d /tmp/homelab-bench-pg.XXXXXX)
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)
server_port=$(free_port)
.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))' > "$root/pw"
chown -R postgres "$root"
cleanup() {
  HOMELAB_HOME="$root/home" .venv/bin/homelab server down >/dev/null 2>&1 || true
  runuser -u postgres -- "$bin/pg_ctl" -D "$root/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf -- "$root"
  .venv/bin/homelab lab up >/dev/null
}
trap cleanup EXIT
runuser -u postgres -- "$bin/initdb" -D "$root/data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
  --pwfile="$root/pw" >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$root/data" -l "$root/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $root" start >/dev/null
runuser -u postgres -- "$bin/createdb" -h "$root" -p "$pg_port" prefect
export HOMELAB_HOME="$root/home" PREFECT_HOME="$root/home/prefect"
HOMELAB_SERVER_DATABASE="postgresql+asyncpg://postgres:$(cat "$root/pw")@127.0.0.1:$pg_port/prefect" \
  .venv/bin/homelab server up --port "$server_port"
export PREFECT_API_URL="http://127.0.0.1:$server_port/api"
.venv/bin/python bench/scale.py --label postgresql "$@"
