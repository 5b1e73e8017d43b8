"""Which rows a router document holds, by state (mgmt.orchestration.documents.build),
on plain objects: applied VPN rows stay in, pending ones wait for their job, a
connection being reset is out. Their secrets are sealed, as the database keeps them."""

from __future__ import annotations

from mgmt.db.models import Zone
from mgmt.db.models.catalog import NetworkOffering
from mgmt.db.models.compute import Nic, Router, VmInstance
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import (
    CustomerGateway,
    FirewallRule,
    LbMember,
    RemoteAccessVpn,
    VpnConnection,
    VpnUser,
)
from mgmt.db.sealing import RA_PSK, S2S_PSK, VPN_PASSWORD, Sealer, new_key
from mgmt.orchestration.documents import Inputs, build

SEALER = Sealer(new_key())


def inputs(
    *, ra_state="Running", user_state="Active", conn_state="Connected", member_state="Active"
) -> Inputs:
    ip = PublicIp(id=1, address="203.0.113.10", source_nat=True)
    rule = FirewallRule(
        id=5,
        purpose="LoadBalancing",
        state="Active",
        ip_address_id=1,
        protocol="tcp",
        start_port=80,
        end_port=80,
        dest_start=8080,
        algorithm="roundrobin",
        lb_protocol="tcp",
    )
    gw = CustomerGateway(
        gateway="198.51.100.7",
        cidr_list="10.9.0.0/24",
        ipsec_psk=SEALER.seal("psk-1234", S2S_PSK),
        ike_policy="aes128-sha256;modp2048",
        esp_policy="aes128-sha256",
        ike_lifetime=86400,
        esp_lifetime=3600,
        dpd=False,
        force_encap=False,
        ike_version="ike",
        split_connections=False,
    )
    return Inputs(
        router=Router(id=1),
        vm=VmInstance(name="r-1-VM"),
        nics=[Nic(traffic_type="Guest", device_id=0, mac="02:00:00:00:00:01")],
        network=Network(cidr="10.1.1.0/24", gateway="10.1.1.1", network_domain="c.internal"),
        zone=Zone(name="z1", dns1="203.0.113.1"),
        offering=NetworkOffering(egress_default_policy=True),
        public_ips=[ip],
        public_range=None,
        instances=[],
        rules=[rule],
        addresses={1: ip.address},
        members={5: [LbMember(id=9, rule_id=5, ip="10.1.1.11", state=member_state)]},
        ra_vpn=RemoteAccessVpn(
            id=3,
            ip_address_id=1,
            ip_range="10.1.2.1-10.1.2.8",
            preshared_key=SEALER.seal("psk-abcdef", RA_PSK),
            state=ra_state,
        ),
        vpn_users=[
            VpnUser(
                id=4,
                username="bob",
                password=SEALER.seal("secret-1", VPN_PASSWORD),
                state=user_state,
            )
        ],
        s2s=[(VpnConnection(id=6, passive=False, state=conn_state), gw, "203.0.113.10")],
        sealer=SEALER,
    )


def test_applied_vpn_rows_stay_in_every_later_document():
    for conn_state in ("Connected", "Disconnected", "Error"):
        doc = build(inputs(conn_state=conn_state), include=lambda key: False)
        assert doc["vpn"]["remote_access"]["users"] == [{"name": "bob", "password": "secret-1"}]
        assert [c["id"] for c in doc["vpn"]["site_to_site"]] == ["s2s-6"]
        assert doc["load_balancers"][0]["members"] == [{"id": "m-9", "ip": "10.1.1.11"}]


def test_pending_rows_wait_for_their_job_and_are_settled_by_it():
    inp = inputs(ra_state="Added", user_state="Add", conn_state="Pending")
    assert "vpn" not in build(inp, include=lambda key: False)
    doc = build(inp, include=lambda key: key in {("ravpn", 3), ("vpnuser", 4), ("s2s", 6)})
    assert doc["vpn"]["remote_access"]["pool_start"] == "10.1.2.1"
    assert doc["vpn"]["site_to_site"][0]["peer_cidrs"] == ["10.9.0.0/24"]
    assert inp.pending == {("ravpn", 3): "Added", ("vpnuser", 4): "Add", ("s2s", 6): "Pending"}


def test_revoked_rows_leave_with_their_job_and_a_reset_connection_is_out():
    inp = inputs(user_state="Revoke", member_state="Revoke")
    doc = build(inp, include=lambda key: key in {("vpnuser", 4), ("member", 9)})
    assert doc["vpn"]["remote_access"]["users"] == []
    assert doc["load_balancers"][0]["members"] == []
    assert inp.pending == {("vpnuser", 4): "Revoke", ("member", 9): "Revoke"}
    doc = build(inputs(conn_state="Reset"))
    assert "site_to_site" not in doc["vpn"]
