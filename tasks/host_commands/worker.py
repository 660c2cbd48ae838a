"""Commands that set up and supervise a host's Prefect process worker (``homelab worker
install``'s bootstrap over SSH). Pure builders: each returns an argv or file text.

The worker's credentials (``PREFECT_API_AUTH_STRING``) live in an env file of mode 0600 that
is written from stdin, never on a command line (where ``ps`` and logs would show it).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from tasks.host_commands.shell import sh

WORKER = ".homelab-worker"  # in the login's home: apart from the deploy state, which belongs to deploys
POLL_SECONDS = 1.0  # PREFECT_WORKER_QUERY_SECONDS: a run is picked up within about this long
HEARTBEAT_SECONDS = 10.0  # PREFECT_WORKER_HEARTBEAT_SECONDS: what `homelab worker status` shows


def worker_dir(home: str) -> str:
    return f"{home.rstrip('/')}/{WORKER}"


def worker_env(api_url: str, auth_string: str | None, *, ca_file: str | None = None,
               poll_s: float = POLL_SECONDS, heartbeat_s: float = HEARTBEAT_SECONDS) -> dict[str, str]:
    """The worker's environment: where the server is, how to prove who it is, how often to poll."""
    if not api_url.startswith(("http://", "https://")):
        raise ValueError(f"the Prefect API URL must be http(s)://…/api, not {api_url!r}")
    env = {"PREFECT_API_URL": api_url, "PREFECT_WORKER_QUERY_SECONDS": f"{poll_s:g}",
           "PREFECT_WORKER_HEARTBEAT_SECONDS": f"{heartbeat_s:g}"}
    if auth_string:
        env["PREFECT_API_AUTH_STRING"] = auth_string
    if ca_file:
        env["PREFECT_API_SSL_CERT_FILE"] = ca_file
    return env


def env_file_text(env: Mapping[str, str]) -> str:
    """KEY='value' lines that both systemd's EnvironmentFile= and ``sh`` (``set -a; .``) read."""
    lines = []
    for key, value in env.items():
        if "\n" in value or "'" in value:
            raise ValueError(f"{key}: a worker setting cannot hold a newline or a single quote")
        lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


WRITE_ENV_FILE = 'umask 077 && mkdir -p -- "$1" && cat > "$1/env.tmp" && mv -f -- "$1/env.tmp" "$1/env"'


def write_env_file(home: str) -> list[str]:
    """Writes stdin to ``<worker dir>/env`` (0600), atomically."""
    return sh(WRITE_ENV_FILE, "homelab-worker-env", worker_dir(home))


def project_dir(home: str) -> str:
    return f"{worker_dir(home)}/project"


def venv_python(home: str) -> str:
    return f"{worker_dir(home)}/venv/bin/python"


def worker_argv(python: str, pool: str, name: str) -> list[str]:
    return [python, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--name", name]


# The project's files from a tar.gz on stdin, swapped in whole (a half-written copy is never run).
INSTALL_PROJECT = """w=$1; umask 022; rm -rf -- "$w/project.new" && mkdir -p -- "$w/project.new" &&
tar -xzf - -C "$w/project.new" || exit 97
rm -rf -- "$w/project.old"; [ ! -d "$w/project" ] || mv -- "$w/project" "$w/project.old"
mv -- "$w/project.new" "$w/project" && rm -rf -- "$w/project.old"
"""


def absolute_dir(path: str) -> list[str]:
    """Prints the absolute path of the directory given (made if missing): a state dir is
    relative to the login's home, a unit file and Prefect's pull step need it whole."""
    return sh('mkdir -p -- "$1" && cd -- "$1" && pwd', "absolute-dir", path)


def install_project(home: str) -> list[str]:
    return sh(INSTALL_PROJECT, "homelab-worker-project", worker_dir(home))


# A venv on the host with the project installed (needs the host's own route to PyPI).
CREATE_VENV = 'w=$1; [ -x "$w/venv/bin/python" ] || python3 -m venv "$w/venv" || exit; ' \
              '"$w/venv/bin/pip" install -q "$w/project"'


def create_venv(home: str) -> list[str]:
    return sh(CREATE_VENV, "homelab-worker-venv", worker_dir(home))


HAS_SYSTEMD = '[ -d /run/systemd/system ] && echo systemd || echo none'


def init_system() -> list[str]:
    """Prints ``systemd`` where systemd runs the host, else ``none``."""
    return sh(HAS_SYSTEMD, "init-system")


# Where there is no systemd (a container, the lab): a supervisor that restarts the worker as
# Restart=always would. It reads the env file itself, so no credential is on a command line.
SUPERVISE = """w=$(cd "$1" && pwd) || exit 1; shift
cd "$w/project" || exit 1
set -a; . "$w/env"; set +a
echo $$ > "$w/supervisor.pid"
child=
trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null; wait; exit 0' TERM INT
while :; do
  "$@" >> "$w/worker.log" 2>&1 & child=$!
  wait "$child"
  sleep 2
done"""

# stop_group PIDFILE: TERM to the supervisor's process group (it and the worker), KILL after
# 10 s, as systemd's stop does. stop_runs DIR then does the same to the processes still working
# in the worker's project directory: its flow runs, which Prefect starts in sessions of their
# own (systemd's stop reaches them through the unit's cgroup).
STOP_GROUP = ('stop_group() { [ -f "$1" ] || return 0; p=$(cat "$1"); kill -TERM "-$p" 2>/dev/null; '
              'for _ in $(seq 50); do kill -0 "-$p" 2>/dev/null || break; sleep 0.2; done; '
              'kill -KILL "-$p" 2>/dev/null; rm -f -- "$1"; }\n'
              'runs_in() { for p in /proc/[0-9]*; do case "$(readlink "$p/cwd" 2>/dev/null)" in '
              '"$1"/project|"$1"/project/*|"$1"/project.old*|"$1/project (deleted)") echo "${p#/proc/}";; esac; '
              'done; }\n'
              'stop_runs() { r=$(runs_in "$1"); [ -n "$r" ] || return 0; kill -TERM $r 2>/dev/null; '
              'for _ in $(seq 50); do r=$(runs_in "$1"); [ -n "$r" ] || return 0; sleep 0.2; done; '
              'kill -KILL $r 2>/dev/null; true; }')

# Stops the supervisor if it runs, then starts a new one, detached in a session of its own.
START_SUPERVISED = STOP_GROUP + """
w=$(cd "$1" && pwd) || exit 1; shift
stop_group "$w/supervisor.pid"; stop_runs "$w"
printf '%s\\n' "$SUPERVISE" > "$w/supervise.sh"
setsid sh "$w/supervise.sh" "$w" "$@" </dev/null >/dev/null 2>&1 &
for _ in $(seq 50); do [ -f "$w/supervisor.pid" ] && exit 0; sleep 0.1; done
echo "the worker's supervisor did not start" >&2; exit 1"""


def start_supervised(home: str, python: str, pool: str, name: str) -> list[str]:
    script = START_SUPERVISED.replace('"$SUPERVISE"', _single_quoted(SUPERVISE))
    return sh(script, "homelab-worker-start", worker_dir(home), *worker_argv(python, pool, name))


STOP_SUPERVISED = STOP_GROUP + ('\nw=$(cd "$1" 2>/dev/null && pwd) || exit 0; '
                                 'stop_group "$w/supervisor.pid"; stop_runs "$w"')


def stop_supervised(home: str) -> list[str]:
    return sh(STOP_SUPERVISED, "homelab-worker-stop", worker_dir(home))


def _single_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# The unit from stdin into place, then (re)started.
INSTALL_UNIT = """unit=$1; cat > "/etc/systemd/system/$unit.tmp" && mv -f "/etc/systemd/system/$unit.tmp" \
"/etc/systemd/system/$unit" && systemctl daemon-reload && systemctl enable -q "$unit" && systemctl restart "$unit"
"""


def install_unit(pool: str) -> list[str]:
    return sh(INSTALL_UNIT, "homelab-worker-unit", unit_name(pool))


def systemd_unit(*, pool: str, name: str, python: str, project_dir: str, env_file: str) -> str:
    """The unit for a real host: restarts the worker, reads its credentials from the env file."""
    return "\n".join([
        "[Unit]",
        f"Description=homelab-orchestrator Prefect worker for pool {pool}",
        "Wants=network-online.target",
        "After=network-online.target docker.service",
        "",
        "[Service]",
        f"WorkingDirectory={project_dir}",
        f"EnvironmentFile={env_file}",
        f"ExecStart={shlex.join(worker_argv(python, pool, name))}",
        "Restart=always",
        "RestartSec=2",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def unit_name(pool: str) -> str:
    return f"homelab-worker-{pool}.service"
