"""The installed Skiff package's version: what the agent reports and what the
management server expects its routers to run (a mismatch means an upgrade)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def skiff_version() -> str:
    """The ``skiff`` distribution's version, or "unknown" when run from a bare checkout."""
    try:
        return version("skiff")
    except PackageNotFoundError:
        return "unknown"
