"""Desired state (inventory + stacks) and the ways to start a deploy (CLI, webhook)."""
