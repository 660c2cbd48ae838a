"""What a failed stack does to the rest of the run (README "Never leave a host broken").
A module of its own so the CLI can name the choices without loading the inventory model."""

from __future__ import annotations

from typing import Literal

FailurePolicy = Literal["halt", "rollback-phase", "rollback-all", "continue"]
