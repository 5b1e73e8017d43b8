"""Appliance roles by name. Every role runs the same agent.

Imported lazily: an agent loads only its own role's modules (the router's
services cost a console proxy about 9 MiB it would never use).
"""

from __future__ import annotations

import importlib

ROLES = {
    "router": "appliances.router.role:RouterRole",
    "console": "appliances.console.role:ConsoleRole",
    "storage": "appliances.storage.role:StorageRole",
}


def load_role(name: str) -> type:
    """The role class registered as ``name`` (KeyError for an unknown one)."""
    module, _, attr = ROLES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
