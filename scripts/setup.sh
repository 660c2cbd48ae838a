#!/usr/bin/env bash
# Provision a fresh Debian 12 machine (run as root) for the homelab orchestrator and its
# simulated lab. Idempotent: every step checks first, so a warm machine takes about a second.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and the lab runs namespaces)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# Everything the lab hosts need (podman behind the docker CLI, sshd, namespaces), plus the
# Prometheus pieces and the PostgreSQL (for the Prefect server) the integration tests start on
# loopback.
PKGS=(
  podman runc conmon netavark aardvark-dns catatonit iptables uidmap fuse-overlayfs
  openssh-server openssh-client busybox-static iproute2 git procps psmisc python3
  ca-certificates prometheus prometheus-pushgateway chromium postgresql
)
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

apt_lists_fresh() {
  # Fresh enough: some Packages lists exist and none is older than a day.
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null &&
    [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin +1440 -print -quit)" ]
}

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  # No systemd here: keep sysv maintainer scripts from starting sshd/prometheus in the root
  # namespace (they would listen on 0.0.0.0). Only add the policy if the machine has none.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy_added=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt_lists_fresh || { log "apt-get update"; apt-get update -qq; }
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    # Stale lists can name .debs the mirror no longer has: refresh once and retry.
    log "install failed; refreshing package lists and retrying"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
else
  log "packages already installed"
fi

debian_mirror() {
  # The main archive URI this machine already uses (deb822 first, then one-line format).
  local uri=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

if [ -x "$COMPOSE_PLUGIN" ] && "$COMPOSE_PLUGIN" version >/dev/null 2>&1; then
  log "docker compose plugin present ($("$COMPOSE_PLUGIN" version --short 2>/dev/null))"
else
  # Debian 12 only has compose v1; the v2 plugin (static Go binary, needs only libc) comes
  # from trixie. A private apt root keeps the system's lists, cache and pinning untouched.
  log "fetching docker compose v2 plugin from trixie"
  work=$(mktemp -d /tmp/compose-fetch.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/deb"
  # apt downloads as the unprivileged _apt user: let it write there.
  chmod 0755 "$work"
  if id _apt >/dev/null 2>&1; then chown -R _apt:root "$work/lists" "$work/cache" "$work/deb"; fi
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) trixie main" \
    >"$work/sources.list"
  apt_private=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=$work/parts"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "APT::Default-Release="
  )
  apt-get "${apt_private[@]}" update -qq
  (cd "$work/deb" && apt-get "${apt_private[@]}" download -qq docker-compose)
  dpkg-deb -x "$work"/deb/docker-compose_*.deb "$work/x"
  src=$(find "$work/x" -type f -name docker-compose -path '*cli-plugins*' | head -n 1)
  [ -n "$src" ] || { echo "setup: no cli-plugins/docker-compose in the trixie package" >&2; exit 1; }
  install -D -m 0755 "$src" "$COMPOSE_PLUGIN"
  rm -rf "$work"
  trap - EXIT
  log "installed $("$COMPOSE_PLUGIN" version --short)"
fi

if command -v docker >/dev/null 2>&1; then
  docker compose version >/dev/null 2>&1 || { echo "setup: 'docker compose' does not find the plugin" >&2; exit 1; }
else
  log "warning: no docker CLI on PATH; the lab hosts need /usr/local/bin/docker (client only)"
fi

log "done"
