"""Every API command, declared by area. Importing this package declares them all."""

from mgmt.commands import (  # noqa: F401
    accounts,
    apis,
    auth,
    catalog,
    config,
    events,
    infra,
    jobs,
    networks,
    projects,
    tags,
    zones,
)
