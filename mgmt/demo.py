"""`skiff demo` (make demo): the management server's main job, end to end, on this machine.

Starts the management server (SQLite, embedded defaults), then through the
CloudStack API, exactly as a user's client would: registers this machine as a
host (netns://lab), creates an isolated network with two instances, a port
forward, a load balancer over both, a firewall rule and a remote-access VPN
user, and prints what to try. It stays up until Ctrl-C (or `skiff demo down`
from another terminal), then removes everything it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cs.client import CloudStack

# The rest is imported when the demo runs: `skiff` imports this module to register the
# subcommand, and every router's agent is a `skiff agent` process (the management
# server's modules would cost each one about 0.6 s of CPU and 40 MiB).

LAB = "lab"
HOME = Path(os.environ.get("SKIFF_DEMO_HOME") or "/var/lib/skiff/demo")
PORT = 8080
PID_FILE = "demo.pid"
INI_FILE = "cloudstack.ini"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the management server with a zone, a network, instances and rules",
        description="Start the management server (SQLite in "
        f"{HOME}) and build, through its API, a zone on this machine with an isolated "
        "network, two instances, a port forward, a load balancer, a firewall rule and a "
        "remote-access VPN user; print what to try; stay up until Ctrl-C. "
        "'skiff demo down' stops a running demo and removes everything.",
    )
    p.add_argument("action", nargs="?", choices=("up", "down"), default="up",
                   help="up (default) or down")
    p.add_argument("--port", type=int, default=PORT, help=f"API port (default {PORT})")
    p.set_defaults(func=_main)


def _say(text: str) -> None:
    print(text, flush=True)


def _main(args: argparse.Namespace) -> int:
    from appliances.lab.lab import LabError, check_root

    try:
        check_root()
    except LabError as exc:
        print(f"skiff demo: error: {exc}", file=sys.stderr)
        return 1
    if args.action == "down":
        return down()
    return asyncio.run(up(args.port))


def _running_pid() -> int | None:
    try:
        pid = int((HOME / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def down() -> int:
    """Stop a running demo (it cleans up after itself), then remove whatever is left."""
    from appliances.lab.lab import Lab

    pid = _running_pid()
    if pid is not None and pid != os.getpid():
        _say(f"stopping the demo (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _running_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.2)
    asyncio.run(Lab(LAB).down(quiet=True))
    shutil.rmtree(HOME, ignore_errors=True)
    _say("demo removed: no namespaces, processes or state left")
    return 0


async def up(port: int) -> int:
    from cs.client import CloudStack, CloudStackApiException

    from appliances.lab.lab import Lab
    from mgmt.server.app import ManagementServer, Settings

    if _running_pid() is not None:
        print(f"skiff demo: error: a demo is running already (pid {_running_pid()}); "
              "stop it with Ctrl-C there or with: make demo-down", file=sys.stderr)
        return 1
    await Lab(LAB).down(quiet=True)
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    HOME.chmod(0o700)
    (HOME / PID_FILE).write_text(f"{os.getpid()}\n")
    server = ManagementServer(Settings(home=HOME / "mgmt", port=port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.open()
        try:
            [url] = await server.listen()
        except OSError as exc:
            print(f"skiff demo: error: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                  "free the port or run: skiff demo --port N", file=sys.stderr)
            return 1
        _say(f"management server: {url} (SQLite in {HOME / 'mgmt'})")
        admin = server.admin
        _write_ini(url, admin.apikey, admin.secretkey)
        api = CloudStack(url, key=admin.apikey, secret=admin.secretkey, fetch_result=True,
                         poll_interval=0.1, timeout=60, job_timeout=300)
        build = asyncio.create_task(asyncio.to_thread(_build, api))
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({build, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if build not in done:
            _say("interrupted: removing what was built")
            return 130
        try:
            facts = build.result()
        except CloudStackApiException as exc:
            print(f"skiff demo: error: {exc.error.get('errortext', exc)}", file=sys.stderr)
            return 1
        _print_summary(url, admin.apikey, admin.secretkey, facts)
        await waiter
        _say("\nstopping: removing the routers, instances and the fabric")
        return 0
    finally:
        with contextlib.suppress(Exception):
            await server.close()
        await Lab(LAB).down(quiet=True)
        shutil.rmtree(HOME, ignore_errors=True)
        _say("demo removed")


def _write_ini(url: str, key: str, secret: str) -> None:
    path = HOME / INI_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[cloudstack]\nendpoint = {url}\nkey = {key}\nsecret = {secret}\n")


def _step(text: str) -> None:
    _say(f"==> {text}")


def _build(api: CloudStack) -> dict[str, Any]:
    from mgmt.api.registry import REGISTRY
    from mgmt.client.zonebox import build_zone

    _step("registering this machine as a host and building the zone")
    zone = build_zone(api, LAB, say=lambda m: _say(f"    {m}"))
    _step("creating isolated network demo-net (10.1.1.0/24)")
    net = api.createNetwork(name="demo-net", displaytext="demo network",
                            zoneid=zone.zone["id"],
                            networkofferingid=zone.network_offering["id"])["network"]
    vms = []
    for name in ("web1", "web2"):
        _step(f"deploying instance {name} (the first one starts the network's router)")
        vms.append(api.deployVirtualMachine(zoneid=zone.zone["id"],
                                            serviceofferingid=zone.offering["id"],
                                            templateid=zone.template["id"],
                                            networkids=net["id"], name=name)["virtualmachine"])
    [snat] = api.listPublicIpAddresses(associatednetworkid=net["id"],
                                       issourcenat="true")["publicipaddress"]
    _step("acquiring a public IP for the port forward")
    pf_ip = api.associateIpAddress(networkid=net["id"])["ipaddress"]
    api.createPortForwardingRule(ipaddressid=pf_ip["id"], protocol="tcp", publicport=8080,
                                 privateport=80, virtualmachineid=vms[0]["id"])
    _say(f"    {pf_ip['ipaddress']}:8080 -> web1:80 (and the firewall opened for it)")
    facts: dict[str, Any] = {"network": net, "vms": vms, "pf_ip": pf_ip["ipaddress"],
                             "snat": snat["ipaddress"]}
    _step("firewall: allow ping to the source NAT address")
    api.createFirewallRule(ipaddressid=snat["id"], protocol="icmp", icmptype=-1, icmpcode=-1)
    if "createloadbalancerrule" in REGISTRY:
        _step("acquiring a public IP for the load balancer over web1 and web2")
        lb_ip = api.associateIpAddress(networkid=net["id"])["ipaddress"]
        rule = api.createLoadBalancerRule(publicipid=lb_ip["id"], name="web", publicport=80,
                                          privateport=80, algorithm="roundrobin",
                                          openfirewall="true")["loadbalancer"]
        api.assignToLoadBalancerRule(id=rule["id"],
                                     virtualmachineids=",".join(v["id"] for v in vms))
        facts["lb_ip"] = lb_ip["ipaddress"]
    if "createremoteaccessvpn" in REGISTRY:
        _step("remote-access VPN on the source NAT address, with user 'demo'")
        vpn = api.createRemoteAccessVpn(publicipid=snat["id"])["remoteaccessvpn"]
        password = secrets.token_urlsafe(12)
        api.addVpnUser(username="demo", password=password)
        facts["vpn"] = {"ip": snat["ipaddress"], "psk": vpn.get("presharedkey"),
                        "user": "demo", "password": password}
    return facts


def _print_summary(url: str, key: str, secret: str, facts: dict[str, Any]) -> None:
    ini = HOME / INI_FILE
    lines = [
        "",
        "The demo is up. Try, in another terminal (as root):",
        "",
        f"  skiff lab exec internet -- curl http://{facts['pf_ip']}:8080/"
        "        # port forward to web1",
    ]
    if "lb_ip" in facts:
        lines.append(f"  skiff lab exec internet -- curl http://{facts['lb_ip']}/"
                     "             # load balancer: web1, web2, web1, ...")
    lines += [
        f"  skiff lab exec internet -- busybox ping -c1 {facts['snat']}"
        "     # the firewall rule allows ICMP",
        f"  skiff lab exec internet -- curl -m 2 http://{facts['snat']}/"
        "       # refused: no rule opens port 80 there",
        "",
        "The API, with cs or skiff api:",
        "",
        f"  export CLOUDSTACK_ENDPOINT={url}",
        f"  export CLOUDSTACK_KEY={key}",
        f"  export CLOUDSTACK_SECRET={secret}",
        f"  (or: export CLOUDSTACK_CONFIG={ini})",
        "  skiff api list routers -o table",
        "  skiff api list virtualmachines -o table",
        "  skiff api list systemvms -o table       # the zone's storage VM and console proxy",
        "  cs listPublicIpAddresses",
        "  cs createConsoleEndpoint virtualmachineid=<id>   # web1's screen, through the proxy",
    ]
    if "vpn" in facts:
        vpn = facts["vpn"]
        lines += ["", f"Remote-access VPN: server {vpn['ip']}, pre-shared key {vpn['psk']}, "
                  f"user {vpn['user']} / {vpn['password']}"]
    lines += ["", "Stop with Ctrl-C here, or: make demo-down (removes everything)."]
    _say("\n".join(lines))
