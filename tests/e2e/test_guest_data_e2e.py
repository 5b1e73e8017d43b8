"""Metadata, user data and passwords end to end: the real agent in a lab, real guests.

Guests fetch with busybox wget from the router's guest gateway, as cloud-init
and CloudStack's password script do. Each test applies the guest data it needs
(derived from the baseline with the generation bumped); a test that changes a
guest's MAC or addresses puts them back before it ends.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import pytest_asyncio

from appliances.lab.lab import Lab
from appliances.lab.names import Guest
from appliances.lab.testing import lab_skip_reason, running_lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or ""),
]

GATEWAY = "10.1.1.1"
META = f"http://{GATEWAY}/latest"
PASSWORD_URL = f"http://{GATEWAY}:8080/"
G1, G2, G3 = Guest(1), Guest(2), Guest(3)  # g3 is in the document but never started
STRANGE_MAC = "52:54:00:01:01:99"


def entry(guest: Guest, password: str | None = None, **extra) -> dict:
    return {
        "instance_id": f"uuid-{guest.name}",
        "vm_id": f"i-2-{guest.index}-VM",
        "ip": str(guest.ip),
        "mac": guest.mac,
        "local_hostname": f"vm-{guest.name}",
        "public_ipv4": "203.0.113.10",
        "service_offering": "Small Instance",
        "availability_zone": "lab-zone",
        "public_keys": [f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA {guest.name}@lab"],
        "user_data": base64.b64encode(f"#cloud-config\nhostname: {guest.name}\n".encode()).decode(),
        "password": password,
        **extra,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab():
    async with running_lab(guests=2) as the_lab:
        the_lab.baseline = the_lab.document  # type: ignore[attr-defined]
        yield the_lab


async def apply_entries(lab: Lab, *entries: dict) -> None:
    await lab.apply(lab.derive(guest_data=list(entries)))


async def wget(lab: Lab, where: str, url: str, header: str | None = None):
    # No -T: Debian 12's busybox 1.35 wget segfaults with it; run_in's timeout bounds it.
    argv = ["busybox", "wget", "-q", "-O", "-"]
    if header:
        argv += ["--header", header]
    return await lab.run_in(where, [*argv, url], timeout=20)


async def ask_password(lab: Lab, where: str, kind: str = "send_my_password"):
    return await wget(lab, where, PASSWORD_URL, f"DomU_Request: {kind}")


async def guest_data_status(lab: Lab) -> dict:
    reply = await lab.agent().request("GET", "/v1/status")
    return reply.body["services"]["guest_data"]


async def test_each_guest_gets_its_own_metadata_and_user_data(lab):
    await apply_entries(lab, entry(G1), entry(G2), entry(G3))
    for guest in (G1, G2):
        me = guest.name
        res = await wget(lab, me, f"{META}/meta-data/")
        assert res.ok, res
        assert {"instance-id", "local-ipv4", "public-keys", "vm-id"} <= set(res.stdout.split())
        for path, want in (
            ("meta-data/instance-id", f"uuid-{me}"),
            ("meta-data/local-ipv4", str(guest.ip)),
            ("meta-data/local-hostname", f"vm-{me}"),
            ("meta-data/vm-id", f"i-2-{guest.index}-VM"),
            ("meta-data/public-ipv4", "203.0.113.10"),
            ("meta-data/availability-zone", "lab-zone"),
            ("meta-data/service-offering", "Small Instance"),
            ("meta-data/public-keys", f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA {me}@lab"),
            ("instance-id", f"uuid-{me}"),  # CloudStack's short form
            ("user-data", f"#cloud-config\nhostname: {me}\n"),
        ):
            res = await wget(lab, me, f"{META}/{path}")
            assert res.ok and res.stdout == want, (me, path, res)
    res = await wget(lab, "g1", f"{META}/meta-data/no-such-thing")
    assert not res.ok and "404" in res.stderr, res


async def test_listeners_bind_only_the_gateway(lab):
    await apply_entries(lab, entry(G1))
    status = await guest_data_status(lab)
    assert sorted(status["listening"]) == [f"{GATEWAY}:80", f"{GATEWAY}:8080"]
    res = await lab.run_in("router", ["ss", "-Htln"])
    listeners = {line.split()[3] for line in res.stdout.splitlines()}
    assert f"{GATEWAY}:80" in listeners and f"{GATEWAY}:8080" in listeners
    assert not {"0.0.0.0:80", "*:80", "0.0.0.0:8080", "*:8080"} & listeners
    # A guest without an entry is refused.
    res = await wget(lab, "g2", f"{META}/meta-data/instance-id")
    assert not res.ok and "403" in res.stderr, res
    # The same content in a new generation: the service has nothing to do.
    reply = await lab.apply(lab.derive())
    assert "guest_data" not in reply.body["services"], reply
    # A new entry is served at once, by the same listeners.
    reply = await lab.apply(lab.derive(guest_data=[entry(G1), entry(G2)]))
    assert reply.body["services"]["guest_data"] == "2 instances", reply
    res = await wget(lab, "g2", f"{META}/meta-data/instance-id")
    assert res.ok and res.stdout == "uuid-g2", res


async def test_borrowed_address_is_refused(lab):
    """g2 sends from g3's address (g3 is in the document, not running): the router's
    neighbour table shows g2's MAC for it, so nothing of g3 is answered."""
    await apply_entries(lab, entry(G1), entry(G2), entry(G3, "g3-secret"))
    borrowed = str(G3.ip)
    await lab.run_in("g2", ["ip", "addr", "add", f"{borrowed}/32", "dev", "eth0"], check=True)
    await lab.run_in(
        "g2", ["ip", "route", "add", f"{GATEWAY}/32", "dev", "eth0", "src", borrowed], check=True
    )
    try:
        res = await wget(lab, "g2", f"{META}/user-data")
        assert not res.ok and "403" in res.stderr and "g3" not in res.stdout, res
        res = await ask_password(lab, "g2")
        assert not res.ok and "g3-secret" not in res.stdout, res
    finally:
        await lab.run_in("g2", ["ip", "route", "del", f"{GATEWAY}/32", "dev", "eth0"])
        await lab.run_in("g2", ["ip", "addr", "del", f"{borrowed}/32", "dev", "eth0"])
    status = await guest_data_status(lab)
    assert status["passwords_pending"] == 1 and status["requests_refused"] >= 2
    res = await wget(lab, "g2", f"{META}/meta-data/instance-id")
    assert res.ok and res.stdout == "uuid-g2", res


async def test_wrong_mac_is_refused(lab):
    """g2 keeps its address but shows up with another MAC: refused until it is back."""
    await apply_entries(lab, entry(G1), entry(G2))
    await lab.run_in("g2", ["ip", "link", "set", "eth0", "address", STRANGE_MAC], check=True)
    try:
        # The router learns the new MAC from g2's ARP request; dropping the old entry
        # makes that independent of timing.
        await lab.run_in("router", ["ip", "neigh", "del", str(G2.ip), "dev", "eth0"])
        res = await wget(lab, "g2", f"{META}/meta-data/instance-id")
        assert not res.ok and "403" in res.stderr, res
    finally:
        await lab.run_in("g2", ["ip", "link", "set", "eth0", "address", G2.mac], check=True)
        await lab.run_in("router", ["ip", "neigh", "del", str(G2.ip), "dev", "eth0"])
    res = await _until_ok(lambda: wget(lab, "g2", f"{META}/meta-data/instance-id"))
    assert res.ok and res.stdout == "uuid-g2", res
    res = await wget(lab, "g1", f"{META}/meta-data/instance-id")
    assert res.ok and res.stdout == "uuid-g1", res


async def test_password_once_then_reset_once_and_kept_across_restart(lab):
    await apply_entries(lab, entry(G1, "first-Secret"), entry(G2, "g2-Secret"))
    res = await ask_password(lab, "g1")
    assert res.ok and res.stdout == "first-Secret", res
    res = await ask_password(lab, "g1")
    assert res.ok and res.stdout == "saved_password", res
    res = await ask_password(lab, "g1", "saved_password")
    assert res.ok and res.stdout == "saved_password", res
    res = await wget(lab, "g1", PASSWORD_URL, "DomU_Request: something_else")
    assert not res.ok and "400" in res.stderr, res
    # g2's password is g2's: untouched by g1's requests.
    assert (await guest_data_status(lab))["passwords_pending"] == 1

    # resetPasswordForVirtualMachine: a new password in a new generation.
    await apply_entries(lab, entry(G1, "second-Secret"), entry(G2, "g2-Secret"))
    res = await ask_password(lab, "g1")
    assert res.ok and res.stdout == "second-Secret", res

    # An agent restart neither forgets nor repeats.
    await lab.stop_agent()
    await lab.start_agent()
    res = await _until_ok(lambda: ask_password(lab, "g1"))
    assert res.ok and res.stdout == "saved_password", res
    res = await ask_password(lab, "g2")
    assert res.ok and res.stdout == "g2-Secret", res
    res = await ask_password(lab, "g2")
    assert res.ok and res.stdout == "saved_password", res
    log = lab.log("agent").read_text()
    assert "Secret" not in log


async def _until_ok(probe, timeout: float = 20.0, interval: float = 0.3):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if result.ok or loop.time() >= deadline:
            return result
        await asyncio.sleep(interval)
