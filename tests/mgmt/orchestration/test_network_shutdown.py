"""Shutting a network down takes its rules and VPN ends with it and frees its addresses."""

from __future__ import annotations

from orchestration_rows import routers_in_a_zone
from sqlalchemy import select

from mgmt.db.models.infra import PublicIp, VlanIpRange
from mgmt.db.models.rules import (
    CustomerGateway,
    FirewallRule,
    LbMember,
    LbPolicy,
    RemoteAccessVpn,
    VpnConnection,
    VpnGateway,
)
from mgmt.orchestration import networks
from mgmt.orchestration.orchestrator import Orchestrator


async def test_shutdown_removes_the_networks_rules_and_vpns(db, tmp_path):
    rows = await routers_in_a_zone(db, tmp_path, 2)
    mine, other = rows.network_ids
    owner = {"account_id": rows.account_id, "domain_id": 1}
    async with db.sessions() as session:
        rng = VlanIpRange(zone_id=rows.zone_id, gateway="203.0.113.1",
                          netmask="255.255.255.0", start_ip="203.0.113.10",
                          end_ip="203.0.113.11")
        session.add(rng)
        await session.flush()
        ips = [PublicIp(address=f"203.0.113.1{k}", zone_id=rows.zone_id, vlan_range_id=rng.id,
                        state="Allocated", account_id=rows.account_id, network_id=net)
               for k, net in enumerate((mine, other))]
        session.add_all(ips)
        await session.flush()
        rules = [FirewallRule(purpose=p, network_id=net, ip_address_id=ip.id, protocol="tcp",
                              start_port=80, state="Active", **owner)
                 for p, net, ip in (("LoadBalancing", mine, ips[0]), ("Firewall", other, ips[1]))]
        session.add_all(rules)
        gateway = VpnGateway(network_id=mine, ip_address_id=ips[0].id, **owner)
        customer = CustomerGateway(name="c", gateway="198.51.100.10", cidr_list="10.9.0.0/24",
                                   ipsec_psk="s3cret-psk", ike_policy="aes128-sha256;modp2048",
                                   esp_policy="aes128-sha256", **owner)
        session.add_all([gateway, customer,
                         RemoteAccessVpn(network_id=mine, ip_address_id=ips[0].id,
                                         ip_range="10.1.2.1-10.1.2.8", preshared_key="k",
                                         **owner)])
        await session.flush()
        session.add_all([LbMember(rule_id=rules[0].id, vm_id=1, ip="10.1.1.20"),
                         LbPolicy(rule_id=rules[0].id, kind="Stickiness", method="LbCookie"),
                         VpnConnection(vpn_gateway_id=gateway.id,
                                       customer_gateway_id=customer.id, **owner)])
        await session.commit()

    await networks.shutdown(Orchestrator(db, tmp_path, "test-server"), mine)

    async with db.sessions() as session:
        for table in (LbMember, LbPolicy, VpnConnection, VpnGateway, RemoteAccessVpn):
            assert (await session.scalars(select(table).where(table.live()))).all() == []
        live_rules = (await session.scalars(select(FirewallRule).where(
            FirewallRule.live()))).all()
        assert [r.network_id for r in live_rules] == [other]  # the other network keeps its own
        freed = await session.get(PublicIp, ips[0].id)
        assert freed.state == "Free" and freed.network_id is None
        assert (await session.get(PublicIp, ips[1].id)).state == "Allocated"
        # The customer gateway is the account's, not the network's: it stays.
        assert (await session.scalars(select(CustomerGateway).where(
            CustomerGateway.live()))).all()
