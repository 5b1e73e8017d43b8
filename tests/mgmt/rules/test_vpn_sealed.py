"""VPN secrets are sealed at rest and never answered; the router's document carries
them in clear (tests/mgmt/rules/rules_world.py: a live server, no router)."""

from __future__ import annotations

import pytest
from rules_world import call
from sqlalchemy import select, update

from mgmt.db.models import Base
from mgmt.db.models.compute import KeystoreEntry, Router, VmInstance
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import CustomerGateway, RemoteAccessVpn, VpnUser
from mgmt.db.sealing import KEY_NAME, NoKey, SealError, is_sealed, load_sealer
from mgmt.db.types import utcnow
from mgmt.orchestration import documents

PASSWORD = "Secret-pw-1"
S2S_PSK = "s3cret-psk-for-branch"
GATEWAY = {
    "gateway": "198.51.100.7",
    "cidrlist": "10.99.0.0/24",
    "ikepolicy": "aes128-sha256;modp2048",
    "esppolicy": "aes128-sha256",
}


async def _vpns(world) -> tuple[dict, dict]:
    """A remote access VPN with a user, and a connection to a customer gateway."""
    alice = world["alice"]
    vpn = (await call(alice, "createRemoteAccessVpn", publicipid=world["ips"][0]))[
        "remoteaccessvpn"
    ]
    await call(alice, "addVpnUser", username="bob", password=PASSWORD)
    customer = (
        await call(alice, "createVpnCustomerGateway", name="branch", ipsecpsk=S2S_PSK, **GATEWAY)
    )["vpncustomergateway"]
    conn = (
        await call(
            alice,
            "createVpnConnection",
            s2svpngatewayid=world["vpngateway"],
            s2scustomergatewayid=customer["id"],
        )
    )["vpnconnection"]
    return vpn, conn


async def _database_text(server) -> str:
    """Every row of every table, as text."""
    out = []
    async with server.db.sessions() as session:
        for table in Base.metadata.sorted_tables:
            out += [repr(tuple(row)) for row in (await session.execute(select(table))).all()]
    return "\n".join(out)


async def _document(server, sealer) -> dict:
    """The VPN part of the document a router of the world's network would get."""
    async with server.db.sessions() as session:
        network = await session.scalar(select(Network).where(Network.name == "web"))
        vm = VmInstance(
            name="r-9-VM",
            type="DomainRouter",
            state="Running",
            account_id=network.account_id,
            domain_id=network.domain_id,
            zone_id=network.zone_id,
        )
        session.add(vm)
        await session.flush()
        router = Router(vm_id=vm.id, network_id=network.id)
        session.add(router)
        await session.flush()
        try:
            return documents.build(await documents.load(session, router.id, sealer))["vpn"]
        finally:
            await session.rollback()  # the router was only for this document


async def test_secrets_are_sealed_at_rest_and_never_answered(world):
    alice, admin, server = world["alice"], world["admin"], world["server"]
    vpn, conn = await _vpns(world)
    psk = vpn["presharedkey"]  # given once, to the VPN's creator
    assert len(psk) == 24
    async with server.db.sessions() as session:
        columns = [
            (await session.scalar(select(RemoteAccessVpn.preshared_key)), psk),
            (await session.scalar(select(VpnUser.password)), PASSWORD),
            (await session.scalar(select(CustomerGateway.ipsec_psk)), S2S_PSK),
        ]
    for stored, clear in columns:
        assert is_sealed(stored) and clear not in stored
    # No clear secret anywhere in the database: columns, jobs' parameters and answers.
    everything = await _database_text(server)
    for secret in (psk, PASSWORD, S2S_PSK):
        assert secret not in everything

    answers = [
        await call(client, command, **params)
        for client in (alice, admin)
        for command, params in (
            ("listRemoteAccessVpns", {"listall": "true"}),
            ("listVpnUsers", {"listall": "true"}),
            ("listVpnCustomerGateways", {"listall": "true"}),
            ("listVpnConnections", {"listall": "true"}),
            ("listAsyncJobs", {"listall": "true"}),
            ("listEvents", {"listall": "true"}),
        )
    ]
    answers.append(await call(alice, "updateVpnCustomerGateway", id=conn["s2scustomergatewayid"]))
    answers.append(conn)
    assert answers[0]["remoteaccessvpn"] and answers[3]["vpnconnection"]
    for secret in (psk, PASSWORD, S2S_PSK):
        assert secret not in repr(answers)

    vpn_section = await _document(server, server.orchestrator.sealer)
    assert vpn_section["remote_access"]["psk"] == psk
    assert vpn_section["remote_access"]["users"] == [{"name": "bob", "password": PASSWORD}]
    assert [s["psk"] for s in vpn_section["site_to_site"]] == [S2S_PSK]


async def test_a_replaced_or_missing_key_is_a_clear_error(world):
    server = world["server"]
    await _vpns(world)
    with pytest.raises(SealError, match="no key to open remote_access_vpns.preshared_key"):
        await _document(server, NoKey())
    old = server.orchestrator.sealer.key_id
    async with server.db.sessions() as session:
        await session.execute(
            update(KeystoreEntry).where(KeystoreEntry.name == KEY_NAME).values(removed=utcnow())
        )
        await session.commit()
    replaced = await load_sealer(server.db)  # a new key, as on first use
    assert replaced.key_id != old
    with pytest.raises(SealError, match=f"sealed with key {old}, but the database's key") as err:
        await _document(server, replaced)
    assert "set the secret again" in str(err.value)
    async with server.db.sessions() as session:
        await session.execute(
            update(KeystoreEntry)
            .where(KeystoreEntry.name == KEY_NAME, KeystoreEntry.removed.is_(None))
            .values(private_key="not a key")
        )
        await session.commit()
    with pytest.raises(SealError, match="is not base64"):
        await load_sealer(server.db)
