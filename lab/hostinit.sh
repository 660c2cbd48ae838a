#!/bin/bash
# A lab host's init and daemon starter.
#
#   hostinit.sh boot HOST HOST_DIR GPU(0|1)
#     Runs as PID 2 inside fresh mount/uts/ipc/pid namespaces (catatonit is PID 1 and reaps
#     orphans) and inside the host's netns. Builds the host's private view of the machine,
#     starts its daemons, then sleeps forever.
#   hostinit.sh start engine|healthdriver|sshd HOST_DIR
#     Starts one daemon (used by boot, and by lab.manager through nsenter to restart one).
#
# Daemons are started as orphans of PID 1, so each can be stopped and restarted alone.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

start() {
  local what=$1 dir=$2
  case "$what" in
    engine)
      # Podman's Docker API where the docker CLI looks by default (/var/run -> /run).
      rm -f /run/docker.sock
      (setsid podman system service --time=0 unix:///run/docker.sock \
        </dev/null >>/run/podman-service.log 2>&1 &)
      for _ in $(seq 200); do [ -S /run/docker.sock ] && return 0; sleep 0.05; done
      echo "podman service did not create /run/docker.sock" >&2
      return 1
      ;;
    healthdriver)
      # Without systemd, podman never runs HEALTHCHECKs itself.
      (setsid /usr/bin/python3 -I "$src/healthdriver.py" </dev/null >>/run/healthdriver.log 2>&1 &)
      ;;
    sshd)
      /usr/sbin/sshd -f "$dir/sshd_config" -E /run/sshd.log
      ;;
    *)
      echo "unknown daemon: $what" >&2
      return 2
      ;;
  esac
}

boot() {
  local host=$1 dir=$2 gpu=$3

  # Root-namespace pid of PID 1, read while /proc is still the machine's: down() SIGKILLs
  # it, which ends every process of the host at once.
  local init_pid
  read -r _ _ _ init_pid _ </proc/self/stat
  echo "$init_pid" >"$dir/init.pid.tmp"
  mv "$dir/init.pid.tmp" "$dir/init.pid"

  hostname "$host"

  # /run: private tmpfs (sshd privsep dir, podman runroot, docker.sock).
  mount -t tmpfs -o mode=0755,size=256m lab-run /run
  mkdir -p /run/sshd /run/lock /run/.lab-cgroup
  # A sysfs of this netns, with the machine's cgroup tree moved back on top for podman.
  mount --rbind /sys/fs/cgroup /run/.lab-cgroup
  mount -t sysfs lab-sys /sys
  mount --move /run/.lab-cgroup /sys/fs/cgroup
  rmdir /run/.lab-cgroup
  mount -t proc lab-proc /proc
  mount -t tmpfs -o mode=1777,size=256m lab-shm /dev/shm

  local py=${LAB_PYTHON_PREFIX:-}
  if [ -n "$py" ] && [ -d "$py" ]; then
    # the machine's Python under /root (see manager.python_prefix_env), kept across the /root bind
    mkdir -p /run/.lab-python && mount --bind "$py" /run/.lab-python
  fi

  mount --bind "$dir/etc-containers" /etc/containers
  mount --bind "$dir/etc-hosts" /etc/hosts
  mount --bind "$dir/root" /root
  if [ -d /run/.lab-python ] && mountpoint -q /run/.lab-python; then
    mkdir -p "$py" && mount --move /run/.lab-python "$py" && mount -o remount,bind,ro "$py"
    rmdir /run/.lab-python
  fi
  mount --bind "$dir/srv" /srv
  # Podman keeps its blob-info cache in /var/lib/containers whatever storage.conf says.
  mount --bind "$dir/var-lib-containers" /var/lib/containers

  if [ "$gpu" = 1 ]; then
    # Only the GPU host has nvidia-smi; /usr/local/sbin is first on sshd's root PATH.
    mount -t tmpfs -o mode=0755,size=1m lab-gpu /usr/local/sbin
    install -m 0755 "$src/fake_nvidia_smi.py" /usr/local/sbin/nvidia-smi
  fi

  cd /root
  start engine "$dir"
  # Like podman-restart.service after a reboot: containers that should come back, do.
  podman start --all --filter restart-policy=always --filter restart-policy=unless-stopped \
    >/dev/null 2>&1 || true
  start healthdriver "$dir"
  start sshd "$dir"

  touch /run/lab-ready
  echo "lab host $host ready"
  exec sleep infinity
}

case "${1:-}" in
  boot) shift; boot "$@" ;;
  start) shift; start "$@" ;;
  *) echo "usage: hostinit.sh boot HOST HOST_DIR GPU | start DAEMON HOST_DIR" >&2; exit 2 ;;
esac
