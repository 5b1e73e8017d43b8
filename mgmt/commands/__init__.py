"""Every API command, declared by area. Importing this package declares them all."""

from mgmt.commands import apis  # noqa: F401
