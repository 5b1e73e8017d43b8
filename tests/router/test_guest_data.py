"""The metadata and password service against its real listeners on loopback.

Guests are loopback source addresses (127.0.0.11, .12 ...): the client binds
its source address, so the server sees a real peer address. Only the
neighbour table is a stand-in (a dict), since loopback has no ARP.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import aiohttp
import pytest

from appliances.agent.service import AgentContext
from appliances.router.document import RouterDocument
from appliances.router.guestdata.neighbours import parse_arp
from appliances.router.services.guest_data import GuestDataService
from appliances.router.verify import parse_document

G1 = {
    "instance_id": "uuid-1",
    "vm_id": "i-2-1-VM",
    "ip": "127.0.0.11",
    "mac": "02:00:00:00:00:11",
    "local_hostname": "web1",
    "public_ipv4": "203.0.113.11",
    "service_offering": "Small Instance",
    "availability_zone": "zone-1",
    "public_keys": ["ssh-ed25519 AAAAC3Nza one@example"],
    "user_data": base64.b64encode(b"#cloud-config\nhostname: web1\n").decode(),
    "password": "Secret-1",
}
G2 = {
    "instance_id": "uuid-2",
    "vm_id": "i-2-2-VM",
    "ip": "127.0.0.12",
    "mac": "02:00:00:00:00:12",
    "local_hostname": "web2",
    "user_data": base64.b64encode(b"for web2").decode(),
    "password": "Secret-2",
}
OUTSIDER = "127.0.0.50"


def document(generation: int = 1, entries=(G1, G2), gateway: str = "127.0.0.1") -> RouterDocument:
    return parse_document(
        {
            "router_id": "r-1",
            "generation": generation,
            "interfaces": [{"role": "guest", "name": "lo", "addresses": [f"{gateway}/8"]}],
            "guest_network": {
                "cidr": "127.0.0.0/8",
                "gateway": gateway,
                "domain": "cloud.internal",
            },
            "guest_data": list(entries),
        }
    )


class FakeNeighbours:
    def __init__(self, macs: dict[str, str]):
        self.macs = macs

    def mac_of(self, ip: str, device: str) -> str | None:
        assert device == "lo"
        return self.macs.get(ip)


@pytest.fixture
def neighbours() -> FakeNeighbours:
    return FakeNeighbours({G1["ip"]: G1["mac"], G2["ip"]: G2["mac"], OUTSIDER: "02:00:00:00:00:50"})


def make_service(state_dir: Path, neighbours: FakeNeighbours) -> GuestDataService:
    ctx = AgentContext("r-1", state_dir, 0)
    return GuestDataService(ctx, ports=(0, 0), neighbours=neighbours)


async def apply(service: GuestDataService, doc: RouterDocument) -> bool:
    change = await service.prepare(doc)
    if change.changed:
        await service.check(change)
        await service.commit(change)
    return change.changed


@pytest.fixture
async def service(tmp_path, neighbours):
    svc = make_service(tmp_path, neighbours)
    await apply(svc, document())
    yield svc
    await svc.stop()


def ports(service: GuestDataService) -> tuple[str, str]:
    meta, password = service.listening()
    return meta, password


async def get(
    address: str, path: str = "/", source: str = G1["ip"], headers: dict | None = None
) -> tuple[int, str, str]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"http://{address}{path}",
            headers=headers or {},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp,
    ):
        return resp.status, await resp.text(), resp.content_type


async def password(service, source=G1["ip"], kind="send_my_password") -> tuple[int, str]:
    status, body, _ = await get(ports(service)[1], source=source, headers={"DomU_Request": kind})
    return status, body


# -- metadata ---------------------------------------------------------------------------


async def test_listing_values_and_short_forms(service):
    meta = ports(service)[0]
    status, body, ctype = await get(meta, "/latest/meta-data/")
    assert (status, ctype) == (200, "text/plain")
    names = body.splitlines()
    assert {
        "instance-id",
        "vm-id",
        "local-hostname",
        "local-ipv4",
        "public-ipv4",
        "public-hostname",
        "service-offering",
        "availability-zone",
        "public-keys",
    } == set(names)
    expected = {
        "instance-id": "uuid-1",
        "vm-id": "i-2-1-VM",
        "local-hostname": "web1",
        "local-ipv4": G1["ip"],
        "public-ipv4": "203.0.113.11",
        "service-offering": "Small Instance",
        "availability-zone": "zone-1",
        "public-keys": G1["public_keys"][0],
    }
    for name, value in expected.items():
        assert await get(meta, f"/latest/meta-data/{name}") == (200, value, "text/plain")
        assert (await get(meta, f"/latest/{name}"))[:2] == (200, value)
    assert (await get(meta, "/latest/meta-data"))[1] == body


async def test_user_data_is_decoded(service):
    meta = ports(service)[0]
    assert (await get(meta, "/latest/user-data"))[:2] == (200, "#cloud-config\nhostname: web1\n")
    assert (await get(meta, "/latest/user-data", source=G2["ip"]))[:2] == (200, "for web2")


async def test_unknown_paths_are_404(service):
    meta = ports(service)[0]
    for path in (
        "/",
        "/latest",
        "/latest/nope",
        "/latest/meta-data/nope",
        "/latest/meta-data/instance-id/x",
        "/2009-04-04/meta-data/",
    ):
        assert (await get(meta, path))[0] == 404, path


async def test_optional_names_are_left_out(service):
    meta = ports(service)[0]
    names = (await get(meta, "/latest/meta-data/", source=G2["ip"]))[1].splitlines()
    assert "public-ipv4" not in names and "public-keys" not in names
    assert (await get(meta, "/latest/meta-data/public-ipv4", source=G2["ip"]))[0] == 404
    assert (await get(meta, "/latest/service-offering", source=G2["ip"]))[:2] == (200, "")


async def test_each_guest_gets_only_its_own(service):
    meta = ports(service)[0]
    assert (await get(meta, "/latest/instance-id", source=G2["ip"]))[1] == "uuid-2"
    assert (await get(meta, "/latest/instance-id", source=G1["ip"]))[1] == "uuid-1"


async def test_wrong_mac_unknown_ip_or_no_neighbour_is_refused(service, neighbours):
    meta, pw = ports(service)
    assert (await get(meta, "/latest/meta-data/", source=OUTSIDER))[0] == 403
    assert (await get(pw, source=OUTSIDER, headers={"DomU_Request": "send_my_password"}))[:2] == (
        403,
        "bad_request",
    )
    neighbours.macs[G2["ip"]] = G1["mac"]  # another guest claims G2's address
    status, body, _ = await get(meta, "/latest/user-data", source=G2["ip"])
    assert status == 403 and "web2" not in body
    assert await password(service, source=G2["ip"]) == (403, "bad_request")
    del neighbours.macs[G2["ip"]]
    assert (await get(meta, "/latest/instance-id", source=G2["ip"]))[0] == 403
    status = service.status()
    assert status["requests_refused"] == 5
    # Nothing was handed out to the impostor: the real G2 still gets its password.
    neighbours.macs[G2["ip"]] = G2["mac"]
    assert await password(service, source=G2["ip"]) == (200, "Secret-2")


# -- passwords --------------------------------------------------------------------------


async def test_password_is_handed_out_once(service):
    assert service.status()["passwords_pending"] == 2
    assert await password(service) == (200, "Secret-1")
    assert await password(service) == (200, "saved_password")
    assert await password(service, kind="saved_password") == (200, "saved_password")
    assert await password(service) == (200, "saved_password")
    status = service.status()
    assert status["passwords_pending"] == 1 and status["passwords_handed_out"] == 1


async def test_ack_without_fetch_settles_the_password(service):
    assert await password(service, source=G2["ip"], kind="saved_password") == (
        200,
        "saved_password",
    )
    assert await password(service, source=G2["ip"]) == (200, "saved_password")


async def test_bad_requests(service):
    pw = ports(service)[1]
    assert (await get(pw))[:2] == (400, "bad_request")
    assert (await get(pw, headers={"DomU_Request": "save_password"}))[:2] == (400, "bad_request")
    assert (await get(pw, headers={"DomU_Request": "SEND_MY_PASSWORD"}))[:2] == (400, "bad_request")
    assert await password(service) == (200, "Secret-1")  # bad requests spent nothing


async def test_reset_hands_out_the_new_password_once(service):
    assert await password(service) == (200, "Secret-1")
    assert await apply(service, document(2, [{**G1, "password": "Secret-1b"}, G2]))
    assert await password(service) == (200, "Secret-1b")
    assert await password(service) == (200, "saved_password")


async def test_handed_out_survives_a_restart(tmp_path, neighbours):
    first = make_service(tmp_path, neighbours)
    await apply(first, document())
    try:
        assert await password(first) == (200, "Secret-1")
    finally:
        await first.stop()
    second = make_service(tmp_path, neighbours)
    await apply(second, document())
    try:
        assert second.status()["passwords_pending"] == 1
        assert await password(second) == (200, "saved_password")
        assert await password(second, source=G2["ip"]) == (200, "Secret-2")
    finally:
        await second.stop()
    ledger = (tmp_path / "guest_data" / "handed-out").read_text()
    key = tmp_path / "guest_data" / "ledger.key"
    assert "Secret" not in ledger and len(ledger.splitlines()) == 2
    assert key.stat().st_mode & 0o777 == 0o600


async def test_removed_instances_leave_the_ledger(service, tmp_path):
    assert await password(service) == (200, "Secret-1")
    await apply(service, document(2, [G2]))
    await apply(service, document(3, [G2, {**G1, "password": "Other"}]))
    ledger = tmp_path / "guest_data" / "handed-out"
    assert ledger.read_text() == ""


async def test_passwords_are_not_logged(service, caplog):
    caplog.set_level(logging.DEBUG)
    assert await password(service) == (200, "Secret-1")
    assert await password(service) == (200, "saved_password")
    assert "Secret-1" not in caplog.text
    assert "Secret-1" not in str(service.status())


# -- applying documents -----------------------------------------------------------------


async def test_second_apply_changes_nothing_and_entries_do_not_rebind(service):
    before = service.listening()
    assert not await apply(service, document())
    assert await apply(service, document(2, [G1]))
    assert service.listening() == before
    assert (await get(before[0], "/latest/instance-id", source=G2["ip"]))[0] == 403
    assert await apply(service, document(3, [G1, {**G2, "local_hostname": "web2b"}]))
    assert service.listening() == before
    assert (await get(before[0], "/latest/local-hostname", source=G2["ip"]))[1] == "web2b"
    assert service.status()["entries"] == 2


async def test_gateway_change_rebinds(service):
    assert await apply(service, document(2, gateway="127.0.0.2"))
    meta, _ = ports(service)
    assert meta.startswith("127.0.0.2:")
    assert (await get(meta, "/latest/instance-id"))[1] == "uuid-1"


async def test_no_instances_no_listeners(service):
    assert await apply(service, document(2, []))
    assert service.listening() == []
    assert not await apply(service, document(3, []))
    assert await apply(service, document(4))
    assert len(service.listening()) == 2


async def test_pause_closes_and_resume_reopens(service):
    meta, _ = ports(service)
    await service.pause()
    assert service.listening() == []
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(meta, "/latest/instance-id")
    # An apply while paused updates the table but opens nothing.
    assert await apply(service, document(2, [{**G1, "local_hostname": "paused"}]))
    assert service.listening() == []
    assert not await apply(service, document(2, [{**G1, "local_hostname": "paused"}]))
    await service.resume()
    meta, _ = ports(service)
    assert (await get(meta, "/latest/local-hostname"))[1] == "paused"


async def test_withdraw_closes_everything(service):
    await service.withdraw()
    assert service.listening() == [] and service.status()["entries"] == 0


# -- parts ------------------------------------------------------------------------------


def test_parse_arp():
    text = (
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "10.1.1.11        0x1         0x2         52:54:00:01:01:0B     *        eth0\n"
        "10.1.1.12        0x1         0x0         00:00:00:00:00:00     *        eth0\n"
        "10.1.1.13        0x1         0x2         52:54:00:01:01:0d     *        eth2\n"
    )
    assert parse_arp(text, "10.1.1.11", "eth0") == "52:54:00:01:01:0b"
    assert parse_arp(text, "10.1.1.12", "eth0") is None  # incomplete
    assert parse_arp(text, "10.1.1.13", "eth0") is None  # another device
    assert parse_arp(text, "10.1.1.14", "eth0") is None


def test_torn_ledger_line_is_ignored(tmp_path):
    from appliances.router.guestdata.ledger import PasswordLedger

    ledger = PasswordLedger(tmp_path)
    digest = ledger.digest("uuid-1", "pw")
    ledger.record(digest)
    with ledger.path.open("a") as f:
        f.write("abc")  # a crash mid-append
    again = PasswordLedger(tmp_path)
    assert again.handed_out(digest)
    assert again.digest("uuid-1", "pw") == digest
    assert again.digest("uuid-1", "pw2") != digest


def test_section_rules():
    from appliances.common.errors import DocumentError

    with pytest.raises(DocumentError) as exc:
        document(entries=[{**G1, "user_data": "abc"}, {**G2, "instance_id": "uuid-1"}])
    locs = {e.loc for e in exc.value.errors}
    assert {"guest_data.0.user_data", "guest_data.1.instance_id"} <= locs


async def test_pause_also_ends_keep_alive_connections(service):
    meta, _ = ports(service)
    connector = aiohttp.TCPConnector(local_addr=(G1["ip"], 0))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.get(f"http://{meta}/latest/instance-id") as resp:
            assert await resp.text() == "uuid-1"
        await service.pause()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"http://{meta}/latest/instance-id") as resp:
                await resp.text()
