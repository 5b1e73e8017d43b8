"""Every API command, declared by area. Importing this package declares them all."""

from mgmt.commands import (  # noqa: F401
    accounts,
    addresses,
    apis,
    auth,
    capacity,
    catalog,
    config,
    events,
    firewall,
    infra,
    jobs,
    lbpolicies,
    loadbalancer,
    networks,
    projects,
    routers,
    tags,
    vms,
    zones,
)
