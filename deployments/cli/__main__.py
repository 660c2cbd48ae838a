"""``python -m deployments.cli``: the same as the ``homelab`` command."""

from deployments.cli import main

main()
