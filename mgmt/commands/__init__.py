"""Every API command, declared by area. Importing this package declares them all."""

from mgmt.commands import accounts, apis, auth, catalog, infra, jobs, zones  # noqa: F401
