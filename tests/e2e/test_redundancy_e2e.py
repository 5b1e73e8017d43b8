"""A redundant router pair end to end: two real agents, keepalived, conntrackd, dnsmasq.

The lab's "router" and "rb" share the guest and public segments. Both get the same
baseline document plus their own redundancy section (appliances.lab.pair). One lab
serves the whole module; the tests run in order and each leaves the pair with a
PRIMARY and a BACKUP (the failover test restarts the stopped agent).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal

import pytest
import pytest_asyncio

from appliances.lab import netns, pair
from appliances.lab.lab import Lab
from appliances.lab.testing import lab_skip_reason, running_lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or ""),
]

INTERNET = "203.0.113.1"
VIPS = {"10.1.1.1/24", "203.0.113.10/24", "203.0.113.11/32", "203.0.113.12/32"}
STATE_TIMEOUT = 30.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab():
    async with running_lab(guests=2, redundant=True) as lab:
        await pair.apply_pair(lab)
        await pair.wait_state(lab, "router", "PRIMARY", STATE_TIMEOUT)
        await pair.wait_state(lab, "rb", "BACKUP", STATE_TIMEOUT)
        yield lab


async def fetch(lab: Lab, guest: str, url: str, timeout: int = 5) -> str:
    res = await lab.run_in(
        guest, ["curl", "-s", "--max-time", str(timeout), url], timeout=timeout + 5
    )
    assert res.ok, res
    return res.stdout


async def addresses(lab: Lab, router: str) -> set[str]:
    res = await lab.run_in(router, ["ip", "-o", "-4", "addr", "show"], check=True)
    return set(re.findall(r"inet (\S+)", res.stdout))


async def wait_for(predicate, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s (last: {value!r})")
        await asyncio.sleep(0.25)


async def primary_and_backup(lab: Lab) -> tuple[str, str]:
    states = {r: (await pair.redundancy_status(lab, r))["vrrp"]["state"] for r in pair.PAIR}
    primary = [r for r, s in states.items() if s == "PRIMARY"]
    assert len(primary) == 1, states
    return primary[0], pair.peer_of(primary[0])


async def test_exactly_one_primary_holds_the_vips(lab):
    primary, backup = await primary_and_backup(lab)
    assert primary == "router"  # the higher priority wins the first election
    held = await addresses(lab, primary)
    assert held >= VIPS
    assert {"10.1.1.2/24", "203.0.113.31/24"} <= held
    backup_held = await addresses(lab, backup)
    assert not VIPS & backup_held
    assert {"10.1.1.3/24", "203.0.113.32/24"} <= backup_held
    status = await pair.redundancy_status(lab, primary)
    assert set(status["vrrp"]["vips_held"]) == VIPS
    assert status["vrrp"]["peer"] == "10.1.1.3" and status["vrrp"]["since"]
    assert status["keepalived"]["running"] and status["conntrackd"]["running"]
    # The default route is the primary's (keepalived's virtual route).
    res = await lab.run_in(primary, ["ip", "route", "show", "default"], check=True)
    assert "via 203.0.113.1 dev eth2" in res.stdout


async def test_guests_reach_the_internet_through_the_vip(lab):
    for guest, ip in (("g1", "10.1.1.11"), ("g2", "10.1.1.12")):
        res = await lab.run_in(guest, ["ip", "route", "show", "default"], check=True)
        assert "via 10.1.1.1" in res.stdout
        body = await fetch(lab, guest, f"http://{INTERNET}/")
        assert body.startswith("internet 203.0.113.10:"), (guest, ip, body)


G1_DATA = {"instance_id": "vm-g1", "vm_id": "i-2-11-VM", "ip": "10.1.1.11",
           "mac": "52:54:00:01:01:0b", "local_hostname": "g1"}
WEB_LB = {"id": "web", "public_ip": "203.0.113.11", "public_port": 80, "private_port": 80,
          "members": [{"id": "g1", "ip": "10.1.1.11"}, {"id": "g2", "ip": "10.1.1.12"}]}


async def test_metadata_runs_on_the_primary_only_and_the_lb_answers_on_the_vip(lab):
    await pair.apply_pair(lab, guest_data=[G1_DATA], load_balancers=[WEB_LB])
    primary, backup = await primary_and_backup(lab)
    on_backup = await pair.service_status(lab, backup, "guest_data")
    on_primary = await pair.service_status(lab, primary, "guest_data")
    assert on_backup["paused"] is True and on_backup["listening"] == [], on_backup
    assert on_primary["paused"] is False and on_primary["listening"], on_primary
    res = await lab.run_in("g1", ["curl", "-s", "--max-time", "5",
                                  "http://10.1.1.1/latest/meta-data/instance-id"])
    assert res.stdout.strip() == "vm-g1", res
    # HAProxy runs on both (bound to the shared address); the VIP's holder answers.
    seen = set()
    for _ in range(4):
        body = await fetch(lab, "g2", "http://203.0.113.11/")
        seen.add(body.split()[0])
    assert seen == {"g1", "g2"}


async def test_backup_dnsmasq_is_paused_and_a_second_apply_changes_nothing(lab):
    primary, backup = await primary_and_backup(lab)
    assert (await pair.service_status(lab, backup, "dnsmasq"))["paused"] is True
    assert (await pair.service_status(lab, backup, "dnsmasq"))["daemon"]["running"] is False
    assert (await pair.service_status(lab, primary, "dnsmasq"))["daemon"]["running"] is True
    for router in pair.PAIR:
        reply = await lab.agent(router).put_config(lab.documents[router])
        assert reply.ok and reply.body["changed"] is False, reply.body
    # An apply while paused updates the config and starts nothing.
    doc = lab.derive(backup, dns_records=[{"name": "paused.lab.test", "ip": "10.1.1.99"}])
    reply = await lab.apply(doc, backup)
    assert "dnsmasq" in reply.body["services"]
    assert (await pair.service_status(lab, backup, "dnsmasq"))["daemon"]["running"] is False
    assert "paused.lab.test" in (_agent_dir(lab, backup) / "dnsmasq" / "hosts").read_text()


async def test_failover_moves_the_vips_and_a_nat_stream_survives(lab):
    primary, backup = await primary_and_backup(lab)
    log = lab.log("g1-stream")
    lab.spawn_in("g1", "g1-stream", ["curl", "-sN", f"http://{INTERNET}/stream"])

    def lines() -> list[str]:
        return [ln for ln in log.read_text().splitlines() if ln.startswith("internet ")]

    await wait_for(lambda: _ready(len(lines()) >= 3), 15, "the stream did not start")
    first = lines()[0].split()
    port = first[1]
    assert port.startswith("203.0.113.10:"), first
    # Let conntrackd tell the backup about the connection before the primary goes.
    await wait_for(
        lambda: _external_has(lab, backup), 15, "the backup's conntrackd did not learn the stream"
    )

    # Shut the primary down: its agent stops (keepalived releases the VIPs and says
    # so), then its cables go, so nothing can pass through it any more.
    await pair.shut_down(lab, primary)
    await pair.wait_state(lab, backup, "PRIMARY", STATE_TIMEOUT)
    assert await addresses(lab, backup) >= VIPS
    assert not VIPS & await addresses(lab, primary)
    seen = len(lines())
    # The same connection (same source NAT port) goes on through the new primary.
    await wait_for(
        lambda: _ready(len(lines()) >= seen + 4), 20, "the stream stopped after the failover"
    )
    last = lines()[-1].split()
    assert last[1] == port and int(last[2]) > int(first[2]) + 3
    stream_pid = lab.pids["g1-stream"]
    assert netns.pid_alive(stream_pid), "curl ended: the connection was reset"
    # New connections and DHCP work through the new primary; its dnsmasq runs.
    assert (await fetch(lab, "g2", f"http://{INTERNET}/")).startswith("internet 203.0.113.10:")
    status = await pair.service_status(lab, backup, "dnsmasq")
    assert status["paused"] is False and status["daemon"]["running"] is True
    await lab.renew("g2")
    # It answers with what was applied while it was paused.
    res = await lab.run_in("g2", ["busybox", "nslookup", "paused.lab.test", "10.1.1.1"], timeout=10)
    assert "10.1.1.99" in res.stdout, res
    # The metadata service moved with the VIPs.
    res = await lab.run_in("g1", ["curl", "-s", "--max-time", "5",
                                  "http://10.1.1.1/latest/meta-data/instance-id"])
    assert res.stdout.strip() == "vm-g1", res

    # Bring the old primary back: it joins as BACKUP (nopreempt), its dnsmasq paused.
    await netns.kill_pids(lambda: [stream_pid] if netns.pid_alive(stream_pid) else [])
    await pair.bring_up(lab, primary)
    await lab.start_agent(primary)
    await pair.wait_state(lab, primary, "BACKUP", STATE_TIMEOUT)
    assert (await pair.redundancy_status(lab, backup))["vrrp"]["state"] == "PRIMARY"
    assert (await pair.service_status(lab, primary, "dnsmasq"))["paused"] is True


async def _ready(value):
    return value


async def _external_has(lab: Lab, router: str) -> bool:
    """The backup's conntrackd holds g1's established connection to the internet."""
    conf = str(lab.agent_state_dir(router, inside=True) / "redundancy" / "conntrackd.conf")
    res = await lab.run_in(router, ["conntrackd", "-C", conf, "-e"])
    return any(
        "ESTABLISHED src=10.1.1.11 dst=203.0.113.1 " in line and "dport=80 " in line
        for line in res.stdout.splitlines()
    )


def _agent_dir(lab: Lab, router: str):
    return lab.agent_state_dir(router)


async def test_a_new_public_ip_reaches_the_primary_through_a_keepalived_reload(lab):
    primary, backup = await primary_and_backup(lab)
    extra = {"ip": "203.0.113.13"}
    for router in (backup, primary):
        doc = lab.derive(router, public_ips=[*lab.documents[router].public_ips, extra])
        reply = await lab.apply(doc, router)
        assert "redundancy" in reply.body["services"], reply.body
    await wait_for(
        lambda: _has(lab, primary, "203.0.113.13/32"),
        10,
        "the primary did not take the new public IP",
    )
    assert "203.0.113.13/32" not in await addresses(lab, backup)
    status = await pair.redundancy_status(lab, primary)
    assert status["vrrp"]["reloads"] >= 1 and status["vrrp"]["state"] == "PRIMARY"
    assert status["keepalived"]["restarts"] == 0


async def _has(lab: Lab, router: str, address: str) -> bool:
    return address in await addresses(lab, router)


async def test_a_primary_that_loses_dnsmasq_gives_up_primary(lab):
    primary, backup = await primary_and_backup(lab)
    # renamed as the router sees its files (from the image, they are in its overlay)
    conf = str(lab.agent_state_dir(primary, inside=True) / "dnsmasq" / "dnsmasq.conf")
    aside = f"{conf}.aside"
    pid = (await pair.service_status(lab, primary, "dnsmasq"))["daemon"]["pid"]
    # every restart of dnsmasq now fails at once
    assert (await lab.run_in(primary, ["mv", conf, aside])).ok
    try:
        os.kill(pid, signal.SIGKILL)
        await pair.wait_state(lab, backup, "PRIMARY", STATE_TIMEOUT)
        status = await pair.redundancy_status(lab, primary)
        assert status["vrrp"]["fault_reason"] == "dnsmasq down", status
        assert status["vrrp"]["state"] in ("FAULT", "BACKUP")
    finally:
        assert (await lab.run_in(primary, ["mv", aside, conf])).ok
    # The new primary serves; the old one comes back as BACKUP, its dnsmasq paused.
    assert await addresses(lab, backup) >= VIPS
    assert (await fetch(lab, "g1", f"http://{INTERNET}/")).startswith("internet 203.0.113.10:")
    await pair.wait_state(lab, primary, "BACKUP", STATE_TIMEOUT)
    assert (await pair.service_status(lab, primary, "dnsmasq"))["paused"] is True
    assert (await pair.service_status(lab, backup, "dnsmasq"))["daemon"]["running"] is True


async def test_a_killed_vrrp_process_leaves_one_holder_of_the_vips(lab):
    """SIGKILL gives keepalived's VRRP process no chance to release the VIPs. keepalived
    starts a new one, which begins as BACKUP: the agent clears what the dead one left,
    and the pair settles with exactly one primary holding the VIPs."""
    primary, backup = await primary_and_backup(lab)
    pid_file = _agent_dir(lab, primary) / "redundancy" / "vrrp.pid"
    vrrp_pid = int(pid_file.read_text())
    before = (await pair.redundancy_status(lab, primary))["vrrp"]["transitions"]
    os.kill(vrrp_pid, signal.SIGKILL)
    await wait_for(
        lambda: _ready(int(pid_file.read_text() or 0) not in (0, vrrp_pid)),
        15,
        "keepalived did not start a new VRRP process",
    )
    # The new process reports BACKUP first (a transition the agent acts on).
    await wait_for(
        lambda: _transitions_after(lab, primary, before),
        15,
        "the agent saw no transition of the new VRRP process",
    )

    async def settled():
        states = {r: (await pair.redundancy_status(lab, r))["vrrp"]["state"] for r in pair.PAIR}
        if sorted(states.values()) != ["BACKUP", "PRIMARY"]:
            return False
        new_primary = next(r for r, st in states.items() if st == "PRIMARY")
        held = {r: VIPS & await addresses(lab, r) for r in pair.PAIR}
        return held[new_primary] == VIPS and not held[pair.peer_of(new_primary)]

    await wait_for(settled, STATE_TIMEOUT, "the pair did not settle with one VIP holder")
    assert (await fetch(lab, "g1", f"http://{INTERNET}/")).startswith("internet 203.0.113.10:")


async def _transitions_after(lab: Lab, router: str, count: int) -> bool:
    return (await pair.redundancy_status(lab, router))["vrrp"]["transitions"] > count


async def _has_none(lab: Lab, router: str) -> bool:
    return not VIPS & await addresses(lab, router)


async def test_leaving_the_pair_keeps_the_addresses_and_serves_alone(lab):
    """The last test: rb is shut down for good and router goes on alone."""
    await pair.shut_down(lab, "rb")
    await pair.wait_state(lab, "router", "PRIMARY", STATE_TIMEOUT)
    reply = await lab.apply(lab.derive("router", redundancy=None), "router")
    assert "redundancy" in reply.body["services"], reply.body
    status = await pair.redundancy_status(lab, "router")
    assert status["enabled"] is False and status["keepalived"]["running"] is False
    assert await addresses(lab, "router") >= VIPS
    res = await lab.run_in("router", ["ip", "route", "show", "default"], check=True)
    assert "via 203.0.113.1" in res.stdout
    dnsmasq = await pair.service_status(lab, "router", "dnsmasq")
    assert dnsmasq["paused"] is False and dnsmasq["daemon"]["running"] is True
    assert (await fetch(lab, "g2", f"http://{INTERNET}/")).startswith("internet 203.0.113.10:")
    await lab.renew("g1")
    reply = await lab.agent("router").put_config(lab.documents["router"])
    assert reply.ok and reply.body["changed"] is False, reply.body
