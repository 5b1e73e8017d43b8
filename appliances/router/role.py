"""The router role: its document and the services that realise it, in order."""

from __future__ import annotations

from appliances.agent.service import AgentContext, Service
from appliances.router.document import RouterDocument
from appliances.router.parse import RouterParser
from appliances.router.services.dnsmasq import DnsmasqService
from appliances.router.services.guest_data import GuestDataService
from appliances.router.services.haproxy import HaproxyService
from appliances.router.services.keepalived import KeepalivedService
from appliances.router.services.network import NetworkService
from appliances.router.services.nftables import NftablesService
from appliances.router.services.strongswan import StrongswanService


class RouterRole:
    name = "router"
    model = RouterDocument

    def parser(self) -> RouterParser:
        return RouterParser()

    def services(self, ctx: AgentContext) -> list[Service]:
        # Addresses first (dnsmasq binds to them), nftables before the daemons:
        # its transaction is its own check, so a refusal there touches nothing.
        # Redundancy before the primary-only services: a router joining a pair
        # pauses them before they would start.
        redundancy = KeepalivedService(ctx)
        services = [
            NetworkService(ctx),
            NftablesService(ctx),
            redundancy,
            DnsmasqService(ctx),
            GuestDataService(ctx),
            StrongswanService(ctx),  # VPN: site-to-site and remote access
            HaproxyService(ctx),
        ]
        redundancy.attach(services)
        return services


