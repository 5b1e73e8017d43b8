"""The ``world`` fixture of the rule commands' live tests."""

from rules_world import world  # noqa: F401
