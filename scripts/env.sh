# Sourced by the scripts: keep every connection inside the lab and loopback, and keep
# Prefect quiet and local.
export HOMELAB_ALLOWED_NETWORKS="${HOMELAB_ALLOWED_NETWORKS-10.203.0.0/24,127.0.0.0/8}"  # set but empty: nothing allowed
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
# the lab trusts its own hosts, SSH keys, release branches and Vault paths (lab/configrepo.py)
export HOMELAB_TRUST_FILE="${HOMELAB_TRUST_FILE:-${HOMELAB_LAB_DIR:-/var/lib/homelab-lab}/trust.yaml}"
