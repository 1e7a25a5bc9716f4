"""Agent registry. An agent is a module `rlagents/agents/<name>.py` (hyphens in the CLI name become
underscores) that defines `AGENT`, its `Agent` subclass; adding an agent needs nothing else here."""

from __future__ import annotations

import importlib
import pkgutil

from rlagents.agents.base import Agent
from rlagents.errors import UserError, choices

_NOT_AGENTS = {"base"}


def available_agents() -> list[str]:
    """CLI names of every agent module in this package."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(n.replace("_", "-") for n in names if n not in _NOT_AGENTS)


def agent_class(name: str) -> type[Agent]:
    """The `Agent` subclass registered under CLI name `name`."""
    valid = available_agents()
    if name not in valid:
        raise UserError(f"unknown agent {name!r}; valid agents: {choices(valid)}")
    module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    return module.AGENT


__all__ = ["Agent", "agent_class", "available_agents"]
