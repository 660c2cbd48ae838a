"""The simulated homelab: three hosts in network namespaces, each with sshd and podman."""
