"""Appliance roles by name. Every role runs the same agent."""

from __future__ import annotations

from appliances.console.role import ConsoleRole
from appliances.router.role import RouterRole

ROLES = {"router": RouterRole, "console": ConsoleRole}
