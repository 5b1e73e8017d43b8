"""The virtual router end to end: the real agent, nftables and dnsmasq in a lab, real traffic.

One lab (internet, router, guests g1 and g2) is shared by the whole module. Every test
applies the document it needs, derived from the lab's baseline with the generation
bumped, so tests do not depend on what ran before them; tests that stop the agent or
add guests put things back before they end.

The agent runs with a PATH whose ``dnsmasq`` and ``nft`` are thin wrappers that
``exec`` the real programs. They only behave differently when a document (or a flag
file next to them) carries a marker, so tests can make a checker refuse a *valid*
document, which validation in front of the checkers otherwise makes impossible:

* ``dnsmasq --test`` fails when the checked config mentions ``refuse-me``;
* ``dnsmasq`` (not --test) exits at once when its config mentions ``failstart`` or
  the file ``fail-start`` exists in the wrapper folder;
* ``nft -f FILE`` fails when FILE holds tcp port 6543.

Everything else the agent runs is the real daemon with the real configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from e2e_traffic import (  # noqa: F401 - shared with the other e2e modules
    FAIL_TIMEOUT,
    OK_TIMEOUT,
    Stream,
    _curl,
    _value,
    blocked,
    client_of,
    get,
    ping,
    server_of,
    status,
    until,
)

from appliances.lab import netns
from appliances.lab.baseline import derive
from appliances.lab.lab import Lab
from appliances.lab.names import Guest
from appliances.lab.testing import lab_skip_reason, running_lab
from appliances.router.document import RouterDocument

pytestmark = [
    pytest.mark.lab,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or ""),
]

INTERNET = "203.0.113.1"
SNAT_IP = "203.0.113.10"
PF_IP = "203.0.113.11"
NAT_IP = "203.0.113.12"
CLIENT_OK = "198.51.100.10"
CLIENT_OTHER = "198.51.100.20"
GATEWAY = "10.1.1.1"
G1 = "10.1.1.11"
G2 = "10.1.1.12"


PF_WEB = {"id": "web", "public_ip": PF_IP, "protocol": "tcp", "public_start": 8080,
          "guest_ip": G1, "guest_start": 80}
IN_WEB = {"id": "in-web", "public_ip": PF_IP, "protocol": "tcp", "start_port": 8080}
PF_NEW = {**PF_WEB, "id": "new", "public_start": 8081}
IN_NEW = {**IN_WEB, "id": "in-new", "start_port": 8081}

DNSMASQ_WRAPPER = """#!/bin/sh
# e2e stand-in: the real dnsmasq unless the config carries a test marker.
conf=
test=no
for arg in "$@"; do
    case "$arg" in
        --conf-file=*) conf=${arg#--conf-file=} ;;
        --test) test=yes ;;
    esac
done
if [ -n "$conf" ] && [ -f "$conf" ]; then
    if [ "$test" = yes ] && grep -q refuse-me "$conf"; then
        echo "dnsmasq: e2e wrapper refuses refuse-me in $conf" >&2
        exit 1
    fi
    if [ "$test" = no ] && { grep -q failstart "$conf" || [ -e "${0%/*}/fail-start" ]; }; then
        echo "dnsmasq: e2e wrapper will not start with $conf" >&2
        exit 3
    fi
fi
exec @REAL@ "$@"
"""

NFT_WRAPPER = """#!/bin/sh
# e2e stand-in: the real nft unless the file it loads holds tcp port 6543.
prev=
for arg in "$@"; do
    if [ "$prev" = -f ] && grep -q 'tcp \\. 6543' "$arg" 2>/dev/null; then
        echo "Error: e2e wrapper refuses tcp port 6543 in $arg" >&2
        exit 1
    fi
    prev=$arg
done
exec @REAL@ "$@"
"""

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data + (" %s:%d" % peer).encode(), peer)
"""

UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[4]))
s.bind((sys.argv[3], 0))
s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
print(s.recvfrom(2048)[0].decode())
"""


# -- the lab ---------------------------------------------------------------------------


def _write_wrappers(directory: Path) -> None:
    for name, text in (("dnsmasq", DNSMASQ_WRAPPER), ("nft", NFT_WRAPPER)):
        real = shutil.which(name)
        assert real, f"{name} is not installed"
        path = directory / name
        path.write_text(text.replace("@REAL@", real))
        path.chmod(0o755)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab():
    wrap_dir = Path(tempfile.mkdtemp(prefix="skiff-e2e-wrap-"))
    wrap_dir.chmod(0o755)
    _write_wrappers(wrap_dir)
    agent_cmd = ["env", f"PATH={wrap_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}",
                 sys.executable, "-m", "mgmt.cli", "agent"]
    try:
        async with running_lab(guests=2, agent_cmd=agent_cmd) as the_lab:
            the_lab.baseline = the_lab.document  # type: ignore[attr-defined]
            the_lab.wrap_dir = wrap_dir  # type: ignore[attr-defined]
            # Extra servers on g2 for the port-range forwards, a UDP echo server on g1.
            for port in (9000, 9001, 9002):
                the_lab.spawn_in("g2", f"g2-httpd-{port}", [
                    sys.executable, "-m", "appliances.lab.httpd", "--name", f"g2p{port}",
                    "--port", str(port)])
            the_lab.spawn_in("g1", "g1-udp", [sys.executable, "-c", UDP_ECHO, "5000"])
            for port in (9000, 9001, 9002):
                res = await until(lambda p=port: _curl(the_lab, "g2", f"http://127.0.0.1:{p}/"),
                                   lambda r: r.ok)
                assert res.ok, res
            yield the_lab
    finally:
        shutil.rmtree(wrap_dir, ignore_errors=True)


def variant(lab: Lab, **changes) -> RouterDocument:
    """The baseline with ``changes``, at the generation after the applied one."""
    base = lab.baseline.model_copy(update={"generation": lab.document.generation})
    return derive(base, **changes)


async def apply(lab: Lab, **changes) -> dict:
    """Apply ``variant(lab, **changes)``; fails unless the agent applied it."""
    reply = await lab.apply(variant(lab, **changes))
    return reply.body


async def restart_agent(lab: Lab) -> None:
    await lab.stop_agent()
    await lab.start_agent()


# -- traffic helpers -------------------------------------------------------------------


async def udp_ask(lab: Lab, where: str, ip: str, port: int, src: str = "0.0.0.0",
                  timeout: float = 2.0) -> netns.Result:
    return await lab.run_in(where, [sys.executable, "-c", UDP_ASK, ip, str(port), src,
                                    str(timeout)], timeout=timeout + 10)


async def nft_table(lab: Lab) -> str:
    """The router's table as nft lists it, counters blanked (they count traffic, not rules)."""
    res = await lab.run_in("router", ["nft", "list", "table", "ip", "skiff"], check=True)
    return re.sub(r"counter packets \d+ bytes \d+", "counter", res.stdout)


async def nslookup(lab: Lab, where: str, name: str) -> netns.Result:
    return await lab.run_in(where, ["busybox", "nslookup", name, GATEWAY], timeout=10)


async def resolves(lab: Lab, where: str, name: str, ip: str) -> bool:
    """The router answers name with ip (an A record; AAAA answers do not matter here)."""
    res = await nslookup(lab, where, name)
    answer = rf"Name:\s+{re.escape(name)}\s+Address:\s+{re.escape(ip)}\s"
    return re.search(answer, res.stdout) is not None


def router_leases(lab: Lab) -> str:
    path = lab.agent_state_dir() / "dnsmasq" / "leases"
    return path.read_text() if path.exists() else ""


# -- 1. DHCP ----------------------------------------------------------------------------


async def test_guest_lease_has_gateway_dns_and_domain(lab):
    await apply(lab)
    for g in (Guest(1), Guest(2)):
        lease = lab.lease(g.name)
        assert lease["event"] in ("bound", "renew")
        assert lease["ip"] == str(g.ip) and lease["prefix"] == "24"
        assert lease["router"].split() == [GATEWAY]
        assert lease["dns"].split() == [GATEWAY]
        assert lease["domain"] == "lab.test"
        resolv = netns.resolv_conf_path(lab.ns(g.name)).read_text().splitlines()
        assert "search lab.test" in resolv and f"nameserver {GATEWAY}" in resolv
        routes = (await lab.run_in(g.name, ["ip", "-4", "route"])).stdout
        assert f"default via {GATEWAY} dev eth0" in routes
        assert g.mac in router_leases(lab)
    # A renewal is answered by the running dnsmasq with the same lease.
    renewed = await lab.renew("g1")
    assert renewed["ip"] == G1 and renewed["router"] == GATEWAY
    assert renewed["domain"] == "lab.test"


async def test_dhcp_options_follow_the_document(lab):
    hosts = [h.model_dump() for h in lab.baseline.dhcp_hosts]
    hosts[1]["default_gateway"] = False
    await apply(lab, dhcp_hosts=hosts)
    lease = await lab.renew("g2")
    assert lease["ip"] == G2 and lease["router"] == ""
    assert (await lab.renew("g1"))["router"] == GATEWAY
    # Domain and lease time live in the main file: dnsmasq restarts with them.
    gn = lab.baseline.guest_network.model_dump(mode="json")
    await apply(lab, guest_network={**gn, "domain": "other.test", "lease_seconds": 3600})
    lease = await lab.renew("g1")
    assert lease["domain"] == "other.test" and lease["lease"] == "3600"
    assert await resolves(lab, "g1", "g2.other.test", G2)
    await apply(lab)
    for g in ("g1", "g2"):
        lease = await lab.renew(g)
        assert lease["domain"] == "lab.test" and lease["router"] == GATEWAY
    assert "default via 10.1.1.1" in (await lab.run_in("g2", ["ip", "-4", "route"])).stdout


# -- 2. DNS -----------------------------------------------------------------------------


async def test_dns_guest_names_and_upstream(lab):
    await apply(lab)
    assert await resolves(lab, "g1", "g2.lab.test", G2)
    # The plain name, through the search domain of the guest's resolv.conf (glibc).
    res = await lab.run_in("g1", ["getent", "ahostsv4", "g2"])
    assert res.ok and G2 in res.stdout.split(), res
    res = await lab.run_in("g2", ["getent", "ahostsv4", "g1"])
    assert res.ok and G1 in res.stdout.split(), res
    # A name outside the guest domain goes to the upstream (the internet's dnsmasq).
    assert await resolves(lab, "g1", "www.internet.test", INTERNET)


async def test_dns_records_and_upstreams_change_on_reload(lab):
    await apply(lab, dns_records=[{"name": "rec.lab.test", "ip": "10.1.1.99"},
                                  {"name": "ext.example.org", "ip": "10.1.1.98"}])
    pid = (await status(lab))["services"]["dnsmasq"]["daemon"]["pid"]
    assert await resolves(lab, "g1", "rec.lab.test", "10.1.1.99")
    assert await resolves(lab, "g1", "ext.example.org", "10.1.1.98")
    gn = lab.baseline.guest_network.model_dump(mode="json")
    body = await apply(lab, guest_network={**gn, "upstream_resolvers": []})
    assert body["services"]["dnsmasq"].startswith("reload")
    assert not await resolves(lab, "g1", "www.internet.test", INTERNET)
    assert not await resolves(lab, "g1", "rec.lab.test", "10.1.1.99")
    await apply(lab)
    assert await resolves(lab, "g1", "www.internet.test", INTERNET)
    # All of it without restarting dnsmasq.
    assert (await status(lab))["services"]["dnsmasq"]["daemon"]["pid"] == pid


# -- 3. source NAT ----------------------------------------------------------------------


async def test_source_nat_to_internet(lab):
    await apply(lab)
    for g in ("g1", "g2"):
        answer = await get(lab, g, f"http://{INTERNET}/")
        assert server_of(answer) == "internet" and client_of(answer) == SNAT_IP


async def test_source_nat_ip_moves_and_goes(lab):
    await apply(lab, public_ips=[{"ip": SNAT_IP}, {"ip": PF_IP, "source_nat": True},
                                 {"ip": NAT_IP}])
    assert client_of(await get(lab, "g1", f"http://{INTERNET}/")) == PF_IP
    await apply(lab, public_ips=[{"ip": SNAT_IP}, {"ip": PF_IP}, {"ip": NAT_IP}])
    await blocked((lab, "g1", f"http://{INTERNET}/"))
    await apply(lab)
    assert client_of(await get(lab, "g1", f"http://{INTERNET}/")) == SNAT_IP


# -- 4. port forwarding -----------------------------------------------------------------


async def test_port_forward_single_port(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    answer = await get(lab, "internet", f"http://{PF_IP}:8080/", src=CLIENT_OK)
    assert server_of(answer) == "g1" and client_of(answer) == CLIENT_OK
    answer = await get(lab, "internet", f"http://{PF_IP}:8080/")
    assert server_of(answer) == "g1" and client_of(answer) == INTERNET
    # Only the forwarded port: 80 on the same public IP goes nowhere.
    await blocked((lab, "internet", f"http://{PF_IP}/"))


async def test_port_forward_ranges(lab):
    await apply(
        lab,
        port_forwards=[
            {"id": "range", "public_ip": PF_IP, "protocol": "tcp", "public_start": 9000,
             "public_end": 9002, "guest_ip": G2, "guest_start": 9000, "guest_end": 9002},
            {"id": "shifted", "public_ip": PF_IP, "protocol": "tcp", "public_start": 7000,
             "public_end": 7001, "guest_ip": G2, "guest_start": 9000, "guest_end": 9001},
        ],
        ingress_rules=[
            {"id": "in-range", "public_ip": PF_IP, "protocol": "tcp", "start_port": 9000,
             "end_port": 9002},
            {"id": "in-shifted", "public_ip": PF_IP, "protocol": "tcp", "start_port": 7000,
             "end_port": 7001},
        ],
    )
    for public, guest in ((9000, 9000), (9001, 9001), (9002, 9002), (7000, 9000),
                          (7001, 9001)):
        answer = await get(lab, "internet", f"http://{PF_IP}:{public}/", src=CLIENT_OK)
        assert server_of(answer) == f"g2p{guest}", (public, answer)
        assert client_of(answer) == CLIENT_OK
    # Just outside both ranges.
    await blocked((lab, "internet", f"http://{PF_IP}:9003/"),
                  (lab, "internet", f"http://{PF_IP}:7002/"))


async def test_port_forward_retarget_and_source_limit(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    assert server_of(await get(lab, "internet", f"http://{PF_IP}:8080/")) == "g1"
    # The same forward (same id) pointed at g2: an element update.
    body = await apply(lab, port_forwards=[{**PF_WEB, "guest_ip": G2}], ingress_rules=[IN_WEB])
    assert "element" in body["services"]["nftables"]
    assert server_of(await get(lab, "internet", f"http://{PF_IP}:8080/")) == "g2"
    # A forward limited to one source, behind an ingress rule open to all.
    await apply(lab, port_forwards=[{**PF_WEB, "source_cidrs": [f"{CLIENT_OK}/32"]}],
                ingress_rules=[IN_WEB])
    answer = await get(lab, "internet", f"http://{PF_IP}:8080/", src=CLIENT_OK)
    assert server_of(answer) == "g1"
    await blocked((lab, "internet", f"http://{PF_IP}:8080/", CLIENT_OTHER))


async def test_udp_port_forward(lab):
    await apply(lab, port_forwards=[{**PF_WEB, "id": "udp", "protocol": "udp",
                                     "public_start": 5353, "guest_start": 5000}],
                ingress_rules=[{**IN_WEB, "protocol": "udp", "start_port": 5353}])
    res = await udp_ask(lab, "internet", PF_IP, 5353, CLIENT_OK)
    assert res.ok and res.stdout.split()[1].startswith(f"{CLIENT_OK}:"), res
    # tcp on the same port is not forwarded.
    await blocked((lab, "internet", f"http://{PF_IP}:5353/"))


async def test_range_rules_modified_in_place(lab):
    def rules(end: int, sources: list[str]) -> dict:
        return {
            "port_forwards": [{"id": "range", "public_ip": PF_IP, "protocol": "tcp",
                               "public_start": 9000, "public_end": end, "guest_ip": G2,
                               "guest_start": 9000, "source_cidrs": sources}],
            "ingress_rules": [{"id": "in-range", "public_ip": PF_IP, "protocol": "tcp",
                               "start_port": 9000, "end_port": end, "source_cidrs": sources}],
        }

    url = f"http://{PF_IP}:9002/"
    await apply(lab, **rules(9002, ["198.51.100.0/28"]))
    assert server_of(await get(lab, "internet", url, src=CLIENT_OK)) == "g2p9002"
    await blocked((lab, "internet", url, CLIENT_OTHER))
    # Each change below is an element update of interval sets and maps.
    body = await apply(lab, **rules(9001, ["198.51.100.0/28"]))
    assert "element" in body["services"]["nftables"]
    assert server_of(await get(lab, "internet", url.replace("9002", "9001"),
                               src=CLIENT_OK)) == "g2p9001"
    await blocked((lab, "internet", url, CLIENT_OK))
    await apply(lab, **rules(9002, ["198.51.100.16/28", "198.51.100.0/29"]))
    assert server_of(await get(lab, "internet", url, src=CLIENT_OTHER)) == "g2p9002"
    await blocked((lab, "internet", url, CLIENT_OK))
    await apply(lab, **rules(9002, ["0.0.0.0/0"]))
    assert server_of(await get(lab, "internet", url, src=CLIENT_OK)) == "g2p9002"


async def test_public_ip_added_and_removed(lab):
    extra = "203.0.113.13"
    pubs = [p.model_dump() for p in lab.baseline.public_ips]
    await apply(lab, public_ips=[*pubs, {"ip": extra}],
                port_forwards=[{**PF_WEB, "public_ip": extra}],
                ingress_rules=[{**IN_WEB, "public_ip": extra}])
    assert server_of(await get(lab, "internet", f"http://{extra}:8080/")) == "g1"
    await apply(lab)
    addrs = (await lab.run_in("router", ["ip", "-4", "addr", "show", "dev", "eth2"])).stdout
    assert f"{extra}/" not in addrs and f"{SNAT_IP}/24" in addrs
    assert not await ping(lab, "internet", extra)


# -- 5. static NAT ----------------------------------------------------------------------


async def test_static_nat_both_directions(lab):
    await apply(
        lab,
        static_nats=[{"public_ip": NAT_IP, "guest_ip": G2}],
        ingress_rules=[{"id": "in-nat", "public_ip": NAT_IP, "protocol": "tcp",
                        "start_port": 80}],
    )
    answer = await get(lab, "internet", f"http://{NAT_IP}/", src=CLIENT_OK)
    assert server_of(answer) == "g2" and client_of(answer) == CLIENT_OK
    assert client_of(await get(lab, "g2", f"http://{INTERNET}/")) == NAT_IP
    # g1 still leaves through the source NAT address.
    assert client_of(await get(lab, "g1", f"http://{INTERNET}/")) == SNAT_IP
    # The ingress rule opened tcp 80 only.
    _, pinged = await asyncio.gather(blocked((lab, "internet", f"http://{NAT_IP}:9000/")),
                                     ping(lab, "internet", NAT_IP))
    assert not pinged


# -- 6. ingress firewall ----------------------------------------------------------------


async def test_ingress_allows_and_denies_by_source(lab):
    url = f"http://{PF_IP}:8080/"
    await apply(lab, port_forwards=[PF_WEB],
                ingress_rules=[{**IN_WEB, "source_cidrs": [f"{CLIENT_OK}/32"]}])
    answer = await get(lab, "internet", url, src=CLIENT_OK)
    assert server_of(answer) == "g1" and client_of(answer) == CLIENT_OK
    await blocked((lab, "internet", url, CLIENT_OTHER), (lab, "internet", url))
    # No ingress rule at all: the forward exists but nothing may reach it.
    await apply(lab, port_forwards=[PF_WEB])
    await blocked((lab, "internet", url, CLIENT_OK), (lab, "internet", url, CLIENT_OTHER))


async def test_ingress_icmp_and_all_protocols(lab):
    await apply(lab, ingress_rules=[{"id": "ping", "public_ip": PF_IP, "protocol": "icmp",
                                     "icmp_type": 8, "source_cidrs": [f"{CLIENT_OK}/32"]}])
    assert await asyncio.gather(ping(lab, "internet", PF_IP, CLIENT_OK),
                                ping(lab, "internet", PF_IP, CLIENT_OTHER),
                                ping(lab, "internet", NAT_IP, CLIENT_OK)) == [True, False, False]
    # protocol all from one source, in front of a static NAT.
    await apply(lab, static_nats=[{"public_ip": NAT_IP, "guest_ip": G1}],
                ingress_rules=[{"id": "all", "public_ip": NAT_IP, "protocol": "all",
                                "source_cidrs": [f"{CLIENT_OTHER}/32"]}])
    assert server_of(await get(lab, "internet", f"http://{NAT_IP}/", src=CLIENT_OTHER)) == "g1"
    assert await ping(lab, "internet", NAT_IP, CLIENT_OTHER)
    res = await udp_ask(lab, "internet", NAT_IP, 5000, CLIENT_OTHER)
    assert res.ok and f"{CLIENT_OTHER}:" in res.stdout, res
    await blocked((lab, "internet", f"http://{NAT_IP}/", CLIENT_OK))


async def test_no_direct_routing_from_internet_to_guests(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    # The internet learns a route to the guest network (as a neighbour on the segment could).
    await lab.run_in("internet", ["ip", "route", "add", "10.1.1.0/24", "via", SNAT_IP],
                     check=True)
    try:
        await blocked((lab, "internet", f"http://{G1}/"), (lab, "internet", f"http://{G2}/"))
        assert not await ping(lab, "internet", G1)
    finally:
        await lab.run_in("internet", ["ip", "route", "del", "10.1.1.0/24"], check=True)
    assert server_of(await get(lab, "internet", f"http://{PF_IP}:8080/")) == "g1"


async def test_agent_api_not_reachable_from_guests(lab):
    await apply(lab)
    res = await _curl(lab, "g1", f"{lab.agent_url}/v1/health", timeout=FAIL_TIMEOUT)
    assert res.rc == 28, res  # a timeout: the router drops it, nothing refuses it


# -- 7. egress firewall -----------------------------------------------------------------


async def test_egress_default_deny_with_one_allowed_destination(lab):
    await apply(lab, egress={"default_policy": "deny", "rules": [
        {"id": "web-out", "protocol": "tcp", "start_port": 80,
         "destination_cidrs": [f"{INTERNET}/32"]}]})
    assert client_of(await get(lab, "g1", f"http://{INTERNET}/")) == SNAT_IP
    _, pinged = await asyncio.gather(
        blocked((lab, "g1", f"http://{CLIENT_OK}/"), (lab, "g2", f"http://{CLIENT_OTHER}/")),
        ping(lab, "g1", INTERNET))
    assert not pinged
    # Guest to guest is not egress, and the router still resolves for the guests.
    assert server_of(await get(lab, "g1", f"http://{G2}/")) == "g2"
    assert await resolves(lab, "g1", "www.internet.test", INTERNET)


async def test_egress_default_allow_with_one_blocked_destination(lab):
    await apply(lab, egress={"default_policy": "allow", "rules": [
        {"id": "no-web", "protocol": "tcp", "start_port": 80,
         "destination_cidrs": [f"{CLIENT_OK}/32"]}]})
    await blocked((lab, "g1", f"http://{CLIENT_OK}/"))
    assert server_of(await get(lab, "g1", f"http://{INTERNET}/")) == "internet"
    assert server_of(await get(lab, "g1", f"http://{CLIENT_OTHER}/")) == "internet"
    assert await ping(lab, "g1", CLIENT_OK)  # tcp 80 only


async def test_egress_by_source_and_icmp(lab):
    await apply(lab, egress={"default_policy": "allow", "rules": [
        {"id": "g1-out", "protocol": "all", "source_cidrs": [f"{G1}/32"]}]})
    _, pinged = await asyncio.gather(blocked((lab, "g1", f"http://{INTERNET}/")),
                                     ping(lab, "g1", INTERNET))
    assert not pinged
    assert server_of(await get(lab, "g2", f"http://{INTERNET}/")) == "internet"
    await apply(lab, egress={"default_policy": "deny", "rules": [
        {"id": "ping-out", "protocol": "icmp", "destination_cidrs": [f"{INTERNET}/32"]}]})
    assert await ping(lab, "g1", INTERNET)
    await blocked((lab, "g1", f"http://{INTERNET}/"))


# -- 8. hairpin -------------------------------------------------------------------------


async def test_hairpin_guest_to_guest_via_public_ip(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    answer = await get(lab, "g2", f"http://{PF_IP}:8080/")
    # g1 answers; the router masquerades the hairpin so the reply comes back through it.
    assert server_of(answer) == "g1" and client_of(answer) == GATEWAY


async def test_hairpin_static_nat_and_forward_on_source_nat_ip(lab):
    await apply(lab, static_nats=[{"public_ip": NAT_IP, "guest_ip": G2}],
                port_forwards=[{**PF_WEB, "public_ip": SNAT_IP}],
                ingress_rules=[{**IN_WEB, "public_ip": SNAT_IP}])
    for where in ("g1", "g2"):  # g2 reaching itself through its own public address too
        answer = await get(lab, where, f"http://{NAT_IP}/")
        assert server_of(answer) == "g2" and client_of(answer) == GATEWAY
    answer = await get(lab, "internet", f"http://{SNAT_IP}:8080/", src=CLIENT_OK)
    assert server_of(answer) == "g1" and client_of(answer) == CLIENT_OK
    answer = await get(lab, "g2", f"http://{SNAT_IP}:8080/")
    assert server_of(answer) == "g1" and client_of(answer) == GATEWAY


# -- 9. removing a rule -----------------------------------------------------------------


async def test_removed_forward_stops_new_connections(lab):
    url = f"http://{PF_IP}:8080/"
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    assert server_of(await get(lab, "internet", url)) == "g1"
    await apply(lab, ingress_rules=[IN_WEB])  # the forward is gone, the rule stays
    await blocked((lab, "internet", url), (lab, "g2", url))


# -- 10. established flows survive applies ----------------------------------------------


async def test_established_streams_survive_applies(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    inbound = Stream(lab, "internet", f"http://{PF_IP}:8080/stream", CLIENT_OK)
    outbound = Stream(lab, "g2", f"http://{INTERNET}/stream")
    async with inbound, outbound:
        assert server_of(inbound.lines[0]) == "g1" and client_of(inbound.lines[0]) == CLIENT_OK
        assert client_of(outbound.lines[0]) == SNAT_IP
        steps = [
            # The default egress verdict lives in a chain: the whole table is replaced,
            # and new connections out are denied from now on.
            {"egress": {"default_policy": "deny"}},
            # Elements only: one more forward and ingress rule.
            {"egress": {"default_policy": "deny"},
             "port_forwards": [PF_WEB, PF_NEW], "ingress_rules": [IN_WEB, IN_NEW]},
            # Back to the start (whole table again).
            {},
        ]
        for n, step in enumerate(steps):
            body = await apply(lab, **{"port_forwards": [PF_WEB], "ingress_rules": [IN_WEB],
                                       **step})
            assert "nftables" in body["services"], body
            denied = [blocked((lab, "g2", f"http://{INTERNET}/"))] if n < 2 else []
            await asyncio.gather(inbound.more(2), outbound.more(2), *denied)
        assert inbound.one_connection(), inbound.lines
        assert outbound.one_connection(), outbound.lines


# -- 11. refused documents leave everything as it was -----------------------------------


async def _assert_as_before(lab: Lab, generation: int, table: str) -> None:
    assert (await status(lab))["applied_generation"] == generation
    assert lab.document.generation == generation
    assert await nft_table(lab) == table
    answer = await get(lab, "internet", f"http://{PF_IP}:8080/", src=CLIENT_OK)
    assert server_of(answer) == "g1" and client_of(answer) == CLIENT_OK
    assert client_of(await get(lab, "g1", f"http://{INTERNET}/")) == SNAT_IP
    assert await resolves(lab, "g1", "g2.lab.test", G2)
    assert await resolves(lab, "g2", "www.internet.test", INTERNET)
    await blocked((lab, "internet", f"http://{PF_IP}:8081/"))


async def test_missing_interface_is_refused_without_effect(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    generation, table = lab.document.generation, await nft_table(lab)
    data = variant(lab, port_forwards=[PF_WEB, PF_NEW],
                   ingress_rules=[IN_WEB, IN_NEW]).model_dump(mode="json")
    public = next(i for i in data["interfaces"] if i["role"] == "public")
    public["name"], public["mac"] = "eth9", None
    reply = await lab.put_config(data)
    assert reply.status == 500, reply
    assert reply.body["service"] == "network" and "eth9" in reply.body["message"]
    assert reply.body["applied_generation"] == generation
    await _assert_as_before(lab, generation, table)


async def test_dnsmasq_checker_refusal_changes_nothing(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    generation, table = lab.document.generation, await nft_table(lab)
    pid = (await status(lab))["services"]["dnsmasq"]["daemon"]["pid"]
    reply = await lab.put_config(variant(
        lab,
        port_forwards=[PF_WEB, PF_NEW],
        ingress_rules=[IN_WEB, IN_NEW],
        dhcp_hosts=[*(h.model_dump() for h in lab.baseline.dhcp_hosts),
                    {"mac": "52:54:00:01:01:50", "ip": "10.1.1.50", "hostname": "refuse-me"}],
    ))
    assert reply.status == 500, reply
    assert reply.body["service"] == "dnsmasq"
    assert "e2e wrapper refuses refuse-me" in reply.body["output"]
    assert reply.body["applied_generation"] == generation
    await _assert_as_before(lab, generation, table)
    st = await status(lab)
    assert st["services"]["dnsmasq"]["daemon"]["pid"] == pid  # not even restarted
    assert st["last_error"]["service"] == "dnsmasq"
    assert not await resolves(lab, "g1", "refuse-me.lab.test", "10.1.1.50")
    lease = await lab.renew("g2")
    assert lease["ip"] == G2 and lease["domain"] == "lab.test"


async def test_nft_refusal_changes_nothing(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    generation, table = lab.document.generation, await nft_table(lab)
    reply = await lab.put_config(variant(
        lab,
        port_forwards=[PF_WEB, {**PF_WEB, "id": "refused", "public_start": 6543}],
        ingress_rules=[IN_WEB, {**IN_WEB, "id": "in-refused", "start_port": 6543}],
        dns_records=[{"name": "new.lab.test", "ip": G1}],
    ))
    assert reply.status == 500, reply
    assert reply.body["service"] == "nftables"
    assert "e2e wrapper refuses tcp port 6543" in reply.body["output"]
    assert reply.body["applied_generation"] == generation
    await _assert_as_before(lab, generation, table)
    await blocked((lab, "internet", f"http://{PF_IP}:6543/"))
    # dnsmasq comes after nftables and was not touched.
    assert not await resolves(lab, "g1", "new.lab.test", G1)


async def test_daemon_failure_after_nft_commit_rolls_nftables_back(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    generation, table = lab.document.generation, await nft_table(lab)
    gn = lab.baseline.guest_network.model_dump(mode="json")
    pubs = [p.model_dump() for p in lab.baseline.public_ips]
    reply = await lab.put_config(variant(
        lab,
        public_ips=[*pubs, {"ip": "203.0.113.13"}],  # the network service commits too
        port_forwards=[PF_WEB, PF_NEW],
        ingress_rules=[IN_WEB, IN_NEW],
        guest_network={**gn, "domain": "failstart.test"},  # main file: dnsmasq restarts
    ))
    assert reply.status == 500, reply
    assert reply.body["service"] == "dnsmasq"
    assert "e2e wrapper will not start" in reply.body["output"]
    assert reply.body["applied_generation"] == generation
    # The forward (and address) the failed document added were committed, then rolled back.
    await _assert_as_before(lab, generation, table)
    addrs = (await lab.run_in("router", ["ip", "-4", "addr", "show", "dev", "eth2"])).stdout
    assert "203.0.113.13/" not in addrs
    st = await status(lab)
    assert st["services"]["dnsmasq"]["daemon"]["running"]
    assert any("rolled back" in e for e in st["services"]["nftables"]["events"])
    lease = await lab.renew("g1")
    assert lease["ip"] == G1 and lease["domain"] == "lab.test"


# -- 12. agent restart ------------------------------------------------------------------


async def test_agent_restart_restores_applied_config(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    generation = lab.document.generation
    url = f"http://{PF_IP}:8080/"
    assert server_of(await get(lab, "internet", url)) == "g1"
    # A refused document just before: it must not be what comes back.
    reply = await lab.put_config(variant(
        lab, port_forwards=[PF_WEB, {**PF_WEB, "id": "refused", "public_start": 6543}],
        ingress_rules=[IN_WEB]))
    assert reply.status == 500, reply
    await lab.stop_agent()
    # A fresh boot: the kernel has no table any more.
    await lab.run_in("router", ["nft", "delete", "table", "ip", "skiff"], check=True)
    await blocked((lab, "internet", url))
    await lab.start_agent()
    res = await until(lambda: _curl(lab, "internet", url), lambda r: r.ok, timeout=15)
    assert res.ok and server_of(res.stdout) == "g1", res
    st = await status(lab)
    assert st["applied_generation"] == generation and st["last_error"] is None
    assert st["services"]["dnsmasq"]["daemon"]["running"]
    assert await resolves(lab, "g1", "g2.lab.test", G2)
    assert client_of(await get(lab, "g1", f"http://{INTERNET}/")) == SNAT_IP


def _is_dnsmasq(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq"
    except OSError:
        return False


async def test_agent_crash_then_restart_restores_everything(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    generation = lab.document.generation
    old_dnsmasq = (await status(lab))["services"]["dnsmasq"]["daemon"]["pid"]
    os.kill(lab.pids.pop("agent"), signal.SIGKILL)
    try:
        await lab.start_agent()
        st = await status(lab)
        assert st["last_error"] is None, st["last_error"]
        assert st["applied_generation"] == generation
        daemon = st["services"]["dnsmasq"]["daemon"]
        assert daemon["running"] and daemon["pid"] != old_dnsmasq
        assert not _is_dnsmasq(old_dnsmasq)
        assert server_of(await get(lab, "internet", f"http://{PF_IP}:8080/")) == "g1"
        assert await resolves(lab, "g1", "g2.lab.test", G2)
    finally:
        if _is_dnsmasq(old_dnsmasq):  # the orphan the crash left behind
            os.kill(old_dnsmasq, signal.SIGKILL)
            await restart_agent(lab)


async def test_restore_failure_keeps_the_firewall(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB])
    flag = lab.wrap_dir / "fail-start"
    await lab.stop_agent()
    flag.write_text("")
    try:
        await lab.start_agent()  # dnsmasq cannot start: restore fails in dnsmasq
        st = await status(lab)
        assert st["last_error"]["service"] == "dnsmasq"
        # Whatever dnsmasq does, the rest of the router keeps the stored document.
        res = await lab.run_in("router", ["nft", "list", "table", "ip", "skiff"])
        assert res.ok, f"no nftables table after the failed restore: {res.stderr}"
        assert server_of(await get(lab, "internet", f"http://{PF_IP}:8080/")) == "g1"
        assert client_of(await get(lab, "g1", f"http://{INTERNET}/")) == SNAT_IP
        await lab.run_in("internet", ["ip", "route", "add", "10.1.1.0/24", "via", SNAT_IP],
                         check=True)
        try:
            await blocked((lab, "internet", f"http://{G1}/"))
        finally:
            await lab.run_in("internet", ["ip", "route", "del", "10.1.1.0/24"], check=True)
        assert st["converged"] is False
        # Once dnsmasq can start again, the agent converges by itself.
        flag.unlink()
        st = await until(lambda: status(lab), lambda st: st["converged"], timeout=30)
        assert st["converged"] and st["last_error"] is None, st
        assert st["services"]["dnsmasq"]["daemon"]["running"]
        assert await resolves(lab, "g1", "g2.lab.test", G2)
    finally:
        flag.unlink(missing_ok=True)
        await restart_agent(lab)


# -- 13. dnsmasq is supervised ----------------------------------------------------------


async def test_killed_dnsmasq_comes_back(lab):
    await apply(lab)
    daemon = (await status(lab))["services"]["dnsmasq"]["daemon"]
    old_pid, restarts = daemon["pid"], daemon["restarts"]
    assert daemon["running"] and _is_dnsmasq(old_pid)
    os.kill(old_pid, signal.SIGKILL)

    def back(st: dict) -> bool:
        d = st["services"]["dnsmasq"]["daemon"]
        return d["running"] and d["pid"] not in (None, old_pid)

    st = await until(lambda: status(lab), back, timeout=10)
    daemon = st["services"]["dnsmasq"]["daemon"]
    assert back(st), daemon
    assert daemon["restarts"] == restarts + 1 and daemon["last_exit"] == -signal.SIGKILL
    events = st["services"]["dnsmasq"]["events"]
    assert any("exited with -9" in e for e in events), events
    assert any(f"restarted (pid {daemon['pid']})" in e for e in events), events
    ok = await until(lambda: resolves(lab, "g1", "g2.lab.test", G2), bool, timeout=10)
    assert ok
    assert (await lab.renew("g1"))["ip"] == G1


# -- 14. the API over real HTTPS --------------------------------------------------------


async def test_api_422_names_every_bad_field(lab):
    data = variant(lab).model_dump(mode="json")
    # Field errors ...
    bad = dict(data)
    bad["dhcp_hosts"] = [{"mac": "not-a-mac", "ip": "10.1.1.50", "hostname": "ok"}]
    bad["port_forwards"] = [{**PF_WEB, "public_start": 70000}]
    bad["ingress_rules"] = [{**IN_WEB, "source_cidrs": ["10.0.0.1/8"]}]
    reply = await lab.put_config(bad)
    assert reply.status == 422, reply
    locs = {e["loc"] for e in reply.body["errors"]}
    assert {"dhcp_hosts.0.mac", "port_forwards.0.public_start",
            "ingress_rules.0.source_cidrs.0"} <= locs, reply.body
    # ... and errors between fields, all named at once.
    bad = dict(data)
    bad["dhcp_hosts"] = [{"mac": "52:54:00:01:01:50", "ip": "10.9.9.9", "hostname": "x"}]
    bad["port_forwards"] = [{**PF_WEB, "guest_ip": "10.1.2.3"}, {**PF_WEB, "id": "same-port"}]
    bad["ingress_rules"] = [{**IN_WEB, "public_ip": "203.0.113.99"}]
    reply = await lab.put_config(bad)
    assert reply.status == 422, reply
    locs = {e["loc"] for e in reply.body["errors"]}
    assert {"dhcp_hosts.0.ip", "port_forwards.0.guest_ip", "port_forwards.1.public_start",
            "ingress_rules.0.public_ip"} <= locs, reply.body
    assert all(e["msg"] for e in reply.body["errors"])
    assert (await status(lab))["applied_generation"] == lab.document.generation


async def test_api_generations(lab):
    body = await apply(lab, dns_records=[{"name": "gen.lab.test", "ip": G1}])
    assert body["changed"]
    current = lab.document
    # The same generation again: nothing to do.
    reply = await lab.put_config(current)
    assert reply.status == 200 and reply.body["changed"] is False, reply
    assert reply.body["applied_generation"] == current.generation
    # The same generation with other content, and an older one: conflicts.
    reused = current.model_copy(update={"dns_records": []}).model_dump(mode="json")
    reply = await lab.put_config(reused)
    assert reply.status == 409, reply
    older = dict(current.model_dump(mode="json"), generation=current.generation - 1)
    reply = await lab.put_config(older)
    assert reply.status == 409 and reply.body["applied_generation"] == current.generation
    assert (await status(lab))["applied_generation"] == current.generation
    config = await lab.agent().request("GET", "/v1/config")
    assert config.status == 200 and config.body == current.model_dump(mode="json")
    assert await resolves(lab, "g2", "gen.lab.test", G1)


async def test_api_schema_is_json_schema(lab):
    reply = await lab.agent().request("GET", "/v1/schema")
    assert reply.status == 200
    schema = reply.body
    assert schema["type"] == "object" and schema["title"] == "RouterDocument"
    assert {"router_id", "generation", "interfaces", "guest_network"} <= set(schema["required"])
    assert {"port_forwards", "ingress_rules", "egress", "static_nats"} <= set(
        schema["properties"])
    assert "PortForward" in schema["$defs"]


async def test_api_requires_client_certificate(lab):
    ca = str(lab.pki.ca_cert)
    host, port = lab.agent_url.removeprefix("https://").rsplit(":", 1)
    # Without a client certificate: no answer (the handshake or the first read fails).
    no_cert = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
                    s.get(f"{lab.agent_url}/v1/health", ssl=no_cert,
                          server_hostname=lab.router_id) as resp):
            await resp.read()
    # With the lab's client certificate it answers, and the server names the router id.
    reply = await lab.agent().health()
    assert reply.status == 200 and reply.body == {"status": "ok"}
    with_cert = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    with_cert.load_cert_chain(str(lab.pki.client_cert), str(lab.pki.client_key))
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=with_cert,
                                                    server_hostname=lab.router_id)
    cert = writer.get_extra_info("peercert")
    writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()
    assert ("DNS", lab.router_id) in cert["subjectAltName"]
    assert (("commonName", lab.router_id),) in cert["subject"]
    # A client that means to reach another router refuses this one.
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(host, int(port), ssl=with_cert,
                                      server_hostname="r-someoneelse")


# -- 15. leases of removed hosts --------------------------------------------------------


async def test_moved_and_removed_hosts_leases_are_released(lab):
    await apply(lab)
    g3 = await lab.add_guest(3)
    try:
        assert f"{g3.mac} {g3.ip} g3" in router_leases(lab)
        host = {"mac": g3.mac, "ip": "10.1.1.33", "hostname": "g3"}
        # The document moves g3: after renewing it has the new address, the old is released.
        await apply(lab, dhcp_hosts=[*(h.model_dump() for h in lab.baseline.dhcp_hosts), host])
        assert (await lab.renew("g3", timeout=15))["ip"] == "10.1.1.33"
        assert await resolves(lab, "g1", "g3.lab.test", "10.1.1.33")
        text = router_leases(lab)
        assert f"{g3.mac} 10.1.1.33 g3" in text and f" {g3.ip} " not in text, text
        # The document drops g3: its lease goes from the router's lease file.
        await apply(lab)
        text = await until(lambda: _value(router_leases(lab)), lambda t: g3.mac not in t)
        assert g3.mac not in text and "10.1.1.33" not in text, text
        assert Guest(1).mac in text and Guest(2).mac in text
        events = (await status(lab))["services"]["dnsmasq"]["events"]
        assert any("released lease 10.1.1.33" in e for e in events), events
    finally:
        await lab.remove_guest("g3")


# -- 16. the same content again ---------------------------------------------------------


async def test_same_content_new_generation_changes_nothing(lab):
    await apply(lab, port_forwards=[PF_WEB], ingress_rules=[IN_WEB],
                static_nats=[{"public_ip": NAT_IP, "guest_ip": G2}],
                dns_records=[{"name": "same.lab.test", "ip": G1}])
    before = await nft_table(lab)
    pid = (await status(lab))["services"]["dnsmasq"]["daemon"]["pid"]
    again = lab.document.model_copy(update={"generation": lab.document.generation + 1})
    reply = await lab.apply(again)
    assert reply.body["changed"] is False and reply.body["services"] == {}, reply.body
    assert reply.body["applied_generation"] == again.generation
    assert await nft_table(lab) == before
    st = await status(lab)
    assert st["applied_generation"] == again.generation
    assert st["services"]["dnsmasq"]["daemon"]["pid"] == pid
    assert server_of(await get(lab, "internet", f"http://{PF_IP}:8080/")) == "g1"
