"""Revision 0008 seals the VPN secrets a database already holds (and what its async
jobs kept of them); the downgrade opens them again. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

from alembic import command as alembic_command
from orchestration_rows import routers_in_a_zone
from sqlalchemy import select

from mgmt.db.engine import open_database
from mgmt.db.migrate import alembic_config, current_revision, head_revision, upgrade
from mgmt.db.models import AsyncJob, Base
from mgmt.db.models.infra import PublicIp, VlanIpRange
from mgmt.db.models.rules import (
    CustomerGateway,
    RemoteAccessVpn,
    VpnConnection,
    VpnGateway,
    VpnUser,
)
from mgmt.db.sealing import JOB_RESULT, is_sealed, load_sealer
from mgmt.orchestration import documents

RA_PSK, PASSWORD, S2S_PSK = "RaPsk0123456789abcdefXYZ", "Secret-pw-1", "s3cret-psk-for-branch"


def _downgrade_to_0007(connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.downgrade(config, "0007")


async def _rows_at_0007(db, home) -> int:
    """A router's network with a remote access VPN, a user and a site-to-site
    connection, and the jobs that made them, all as 0007 kept them: in clear."""
    rows = await routers_in_a_zone(db, home, 1)
    owner = {"account_id": rows.account_id, "domain_id": 1}
    async with db.sessions() as session:
        rng = VlanIpRange(
            zone_id=rows.zone_id,
            gateway="203.0.113.1",
            netmask="255.255.255.0",
            start_ip="203.0.113.10",
            end_ip="203.0.113.10",
        )
        session.add(rng)
        await session.flush()
        ip = PublicIp(
            address="203.0.113.10",
            zone_id=rows.zone_id,
            vlan_range_id=rng.id,
            state="Allocated",
            network_id=rows.network_ids[0],
            source_nat=True,
            account_id=rows.account_id,
        )
        session.add(ip)
        await session.flush()
        customer = CustomerGateway(
            name="branch",
            gateway="198.51.100.7",
            cidr_list="10.99.0.0/24",
            ipsec_psk=S2S_PSK,
            ike_policy="aes128-sha256;modp2048",
            esp_policy="aes128-sha256",
            **owner,
        )
        gateway = VpnGateway(network_id=rows.network_ids[0], ip_address_id=ip.id, **owner)
        session.add_all(
            [
                customer,
                gateway,
                RemoteAccessVpn(
                    network_id=rows.network_ids[0],
                    ip_address_id=ip.id,
                    ip_range="10.1.2.1-10.1.2.8",
                    preshared_key=RA_PSK,
                    state="Running",
                    **owner,
                ),
                VpnUser(username="bob", password=PASSWORD, state="Active", **owner),
            ]
        )
        await session.flush()
        session.add(
            VpnConnection(
                vpn_gateway_id=gateway.id,
                customer_gateway_id=customer.id,
                state="Connected",
                **owner,
            )
        )
        gw_answer = {"vpncustomergateway": {"name": "branch", "ipsecpsk": S2S_PSK}}
        jobs = [
            ("addVpnUser", {"username": "bob", "Password": PASSWORD}, {"vpnuser": {"id": "u"}}),
            ("createVpnCustomerGateway", {"name": "branch", "ipsecpsk": S2S_PSK}, gw_answer),
            ("updateVpnCustomerGateway", {"id": "g", "ipsecpsk": S2S_PSK}, gw_answer),
            ("resetVpnConnection", {"id": "c"}, {"vpnconnection": {"ipsecpsk": S2S_PSK}}),
            (
                "createRemoteAccessVpn",
                {"publicipid": "p"},
                {"remoteaccessvpn": {"presharedkey": RA_PSK}},
            ),
        ]
        session.add_all(
            AsyncJob(
                cmd=cmd,
                kind=cmd.lower(),
                params=json.dumps(params),
                result=json.dumps(result),
                status=1,
            )
            for cmd, params, result in jobs
        )
        await session.commit()
    return rows.router_ids[0]


async def _everything(db) -> str:
    async with db.sessions() as session:
        return repr([(await session.execute(select(t))).all() for t in Base.metadata.sorted_tables])


async def test_revision_0008_seals_what_0007_kept_in_clear(db_url, tmp_path):
    db = await open_database(db_url, migrate=False)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0007)
        router_id = await _rows_at_0007(db, tmp_path)

        await upgrade(db.engine)
        assert await current_revision(db.engine) == head_revision()
        everything = await _everything(db)
        for secret in (RA_PSK, PASSWORD, S2S_PSK):
            assert secret not in everything
        sealer = await load_sealer(db)  # the key the revision made
        async with db.sessions() as session:
            for column in (
                RemoteAccessVpn.preshared_key,
                VpnUser.password,
                CustomerGateway.ipsec_psk,
            ):
                assert is_sealed(await session.scalar(select(column)))
            jobs = {j.cmd: j for j in (await session.scalars(select(AsyncJob))).all()}
            vpn = await documents.load(session, router_id, sealer)
        assert json.loads(jobs["addVpnUser"].params) == {"username": "bob"}
        assert json.loads(jobs["updateVpnCustomerGateway"].params) == {"id": "g"}
        assert json.loads(jobs["resetVpnConnection"].result) == {"vpnconnection": {}}
        assert json.loads(jobs["createVpnCustomerGateway"].result) == {
            "vpncustomergateway": {"name": "branch"}
        }
        ra_answer = json.loads(jobs["createRemoteAccessVpn"].result)["remoteaccessvpn"]
        assert sealer.unseal(ra_answer["presharedkey"], JOB_RESULT) == RA_PSK
        section = documents.build(vpn)["vpn"]
        assert section["remote_access"]["psk"] == RA_PSK
        assert section["remote_access"]["users"] == [{"name": "bob", "password": PASSWORD}]
        assert [s["psk"] for s in section["site_to_site"]] == [S2S_PSK]

        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0007)
        async with db.sessions() as session:
            assert await session.scalar(select(VpnUser.password)) == PASSWORD
            assert await session.scalar(select(CustomerGateway.ipsec_psk)) == S2S_PSK
            assert await session.scalar(select(RemoteAccessVpn.preshared_key)) == RA_PSK
        await upgrade(db.engine)  # the same key seals them again
        assert (await load_sealer(db)).key_id == sealer.key_id
    finally:
        await db.close()
