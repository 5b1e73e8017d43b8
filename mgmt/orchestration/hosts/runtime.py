"""The namespace runtime: routers and instances as network namespaces on one host.

The same runtime serves the local ``netns`` driver and the ``ssh`` driver; only
the executor differs. On a host:

- every segment (guest network or the public network) is a Linux bridge
  ``s<vni>`` in the *bridge namespace* (the lab's switch namespace locally, the
  host's own namespace on a remote host), plus a VXLAN device ``x<vni>`` with
  one all-zero FDB entry per peer host when the segment spans hosts;
- the control network is bridge ``ctl`` there; the host's address on it is the
  first of ``control_network``;
- a router or instance is namespace ``<prefix><name>``; each NIC is a veth whose
  other end is a port of the segment's bridge (its name derived from the
  appliance name and device, at most 15 characters);
- a router runs the agent in its own mount namespace (private /run), with its
  certificates in ``<state_dir>/<name>/pki``; or, when its plan names a system-VM
  image (a root file system archive), the image's own ``skiff boot --run`` chrooted
  into an overlay of that image's shared extraction, with the boot configuration
  in ``<state_dir>/<name>/boot`` (appliances.image.imageroot); an instance runs the lab's small
  HTTP server and busybox udhcpc with the lab's own event script (which never
  touches the host's /etc/resolv.conf);
- a system VM (console proxy ``v-<id>-VM``, storage VM ``s-<id>-VM``) is started
  as a router is, with its plan's role; the runtime puts its NICs' static
  addresses and its default route in place, since those roles configure no
  interfaces themselves;
- an instance with a VNC display gets Xvfb and x11vnc (appliances.lab.vncserver)
  on the host itself, listening on the host's control address, where the console
  proxy reaches it; their process group id is in ``<state_dir>/<name>/vnc.pid``.

Everything is idempotent: what exists is left alone, so a retry after a partial
failure completes the work.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import re
import sys
from pathlib import Path

from appliances.common.proc import Result
from mgmt.orchestration.hosts.driver import (
    HostError,
    InstancePlan,
    NicPlan,
    RouterPlan,
    VncPlan,
)
from mgmt.orchestration.hosts.executor import Executor

AGENT_PORT = 8443
VXLAN_PORT = 4789
CONTROL_BRIDGE = "ctl"
UDHCPC_SCRIPT = Path(__file__).resolve().parents[3] / "appliances/lab/scripts/udhcpc.sh"
#: The agents' IPsec data path: this kernel has no ESP (see the router's strongSwan).
IPSEC_DATAPATH = {"SKIFF_IPSEC_DATAPATH": "libipsec"}


def segment_bridge(vni: int) -> str:
    return f"s{vni}"


def vxlan_device(vni: int) -> str:
    return f"x{vni}"


def port_name(name: str, device: str) -> str:
    """The bridge-side end of an appliance NIC: readable when short, else hashed."""
    compact = re.sub(r"[^a-z0-9]", "", name.lower())
    dev = device.removeprefix("eth")
    candidate = f"{compact}-{dev}"
    if len(candidate) <= 15:
        return candidate
    digest = hashlib.blake2s(f"{name}/{device}".encode(), digest_size=5).hexdigest()
    return f"p{digest}-{dev}"[:15]


class NamespaceRuntime:
    def __init__(self, executor: Executor, *, prefix: str, bridge_ns: str | None,
                 state_dir: str, python: str = sys.executable):
        self.x = executor
        self.prefix = prefix
        self.bridge_ns = bridge_ns
        self.state_dir = state_dir.rstrip("/")
        self.python = python

    # -- low level ------------------------------------------------------------------------

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def ip(self, ns: str | None, *args: str, check: bool = True) -> Result:
        return await self.x.run(["ip", *(["-n", ns] if ns else []), *args], check=check)

    async def in_ns(self, ns: str, argv: list[str], check: bool = True) -> Result:
        return await self.x.run(["ip", "netns", "exec", ns, *argv], check=check)

    async def namespaces(self) -> set[str]:
        res = await self.x.run(["ip", "-j", "netns", "list"], check=False)
        if not res.ok or not res.stdout.strip():
            return set()
        return {entry["name"] for entry in json.loads(res.stdout)}

    async def links(self, ns: str | None) -> set[str]:
        res = await self.ip(ns, "-j", "link", "show", check=False)
        if not res.ok or not res.stdout.strip():
            return set()
        return {link["ifname"] for link in json.loads(res.stdout)}

    async def ensure_namespace(self, ns: str) -> None:
        if ns in await self.namespaces():
            return
        await self.x.write_file(f"/etc/netns/{ns}/resolv.conf",
                                f"# {ns}: written by its DHCP client\n".encode(), 0o644)
        await self.x.run(["ip", "netns", "add", ns])
        await self.ip(ns, "link", "set", "lo", "up")

    async def ensure_bridge(self, name: str, mtu: int = 1500) -> None:
        if name not in await self.links(self.bridge_ns):
            await self.ip(self.bridge_ns, "link", "add", name, "type", "bridge", "stp_state",
                          "0", "forward_delay", "0")
        await self.ip(self.bridge_ns, "link", "set", name, "mtu", str(mtu), "up")

    async def plug(self, ns: str, nic: NicPlan, bridge: str, owner: str) -> None:
        """veth: ``device`` (with its MAC) in ns, the port end in the bridge."""
        port = port_name(owner, nic.device)
        if nic.device not in await self.links(ns):
            if port in await self.links(self.bridge_ns):
                await self.ip(self.bridge_ns, "link", "delete", port, check=False)
            argv = ["link", "add", port, "type", "veth", "peer", "name", nic.device,
                    "address", nic.mac, "netns", ns]
            await self.ip(self.bridge_ns, *argv)
        await self.ip(self.bridge_ns, "link", "set", port, "master", bridge, "up")
        await self.ip(ns, "link", "set", nic.device, "up")

    # -- segments -------------------------------------------------------------------------

    async def plug_segment(self, vni: int, peers: tuple[str, ...] = (), mtu: int = 1500,
                           underlay_ip: str | None = None) -> None:
        bridge = segment_bridge(vni)
        await self.ensure_bridge(bridge, mtu)
        vx = vxlan_device(vni)
        if not peers:
            if vx in await self.links(self.bridge_ns):
                await self.ip(self.bridge_ns, "link", "delete", vx, check=False)
            return
        if underlay_ip is None:
            raise HostError(f"segment {vni} spans hosts but this host has no underlay address")
        if vx in await self.links(self.bridge_ns) and await self._vxlan_local(vx) != underlay_ip:
            await self.ip(self.bridge_ns, "link", "delete", vx)  # the underlay address moved
        if vx not in await self.links(self.bridge_ns):
            await self.ip(self.bridge_ns, "link", "add", vx, "type", "vxlan", "id", str(vni),
                          "local", underlay_ip, "dstport", str(VXLAN_PORT), "nolearning")
        await self.ip(self.bridge_ns, "link", "set", vx, "mtu", str(mtu), "master", bridge, "up")
        res = await self.x.run(["bridge", *(["-n", self.bridge_ns] if self.bridge_ns else []),
                                "-j", "fdb", "show", "dev", vx], check=False)
        present = {e.get("dst") for e in json.loads(res.stdout or "[]")
                   if e.get("mac") == "00:00:00:00:00:00"}
        for peer in sorted(set(peers) - present):
            await self._fdb("append", vx, peer)
        for peer in sorted(present - set(peers) - {None}):
            await self._fdb("del", vx, str(peer))

    async def _vxlan_local(self, vx: str) -> str | None:
        res = await self.ip(self.bridge_ns, "-d", "-j", "link", "show", vx, check=False)
        links = json.loads(res.stdout or "[]") if res.ok else []
        return links[0].get("linkinfo", {}).get("info_data", {}).get("local") if links else None

    async def _fdb(self, op: str, vx: str, peer: str) -> None:
        await self.x.run(["bridge", *(["-n", self.bridge_ns] if self.bridge_ns else []), "fdb",
                          op, "00:00:00:00:00:00", "dev", vx, "dst", peer])

    async def unplug_segment(self, vni: int) -> None:
        present = await self.links(self.bridge_ns)
        for link in (vxlan_device(vni), segment_bridge(vni)):
            if link in present:
                await self.ip(self.bridge_ns, "link", "delete", link, check=False)

    async def ensure_control(self, host_ip: ipaddress.IPv4Interface) -> None:
        """Bridge ``ctl``; without a bridge namespace (a remote host) it holds the host's
        control address itself. (The netns driver reaches a bridge namespace's ``ctl``
        through a veth of its own.)"""
        await self.ensure_bridge(CONTROL_BRIDGE)
        if self.bridge_ns is None:
            await self.ip(None, "address", "replace", str(host_ip), "dev", CONTROL_BRIDGE)

    # -- appliances -----------------------------------------------------------------------

    def appliance_dir(self, name: str) -> str:
        return f"{self.state_dir}/{name}"

    def log(self, name: str, what: str) -> str:
        return f"{self.state_dir}/logs/{name}-{what}.log"

    async def _nics(self, name: str, nics: tuple[NicPlan, ...]) -> str:
        ns = self.ns(name)
        await self.ensure_namespace(ns)
        for nic in nics:
            bridge = CONTROL_BRIDGE if nic.role == "control" else segment_bridge(nic.vni or 0)
            if nic.role != "control" and nic.vni is None:
                raise HostError(f"{name} {nic.device}: a {nic.role} NIC needs a segment (vni)")
            await self.plug(ns, nic, bridge, name)
        return ns

    async def start_router(self, plan: RouterPlan) -> None:
        ns = await self._nics(plan.name, plan.nics)
        control = next((n for n in plan.nics if n.role == "control"), None)
        if control is None:
            raise HostError(f"router {plan.name} has no control NIC")
        await self.ip(ns, "address", "replace", str(plan.control_ip), "dev", control.device)
        await self.in_ns(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        await self._static(ns, plan)
        if await self._alive(ns, "agent"):
            return
        if plan.image:
            await self._start_router_from_image(plan, ns)
            return
        home = self.appliance_dir(plan.name)
        pki = f"{home}/pki"
        await self.x.write_file(f"{pki}/ca.pem", plan.certs.ca.encode(), 0o644)
        await self.x.write_file(f"{pki}/agent.pem", plan.certs.cert.encode(), 0o644)
        await self.x.write_file(f"{pki}/agent.key", plan.certs.key.encode(), 0o600)
        await self.x.run(["mkdir", "-p", f"{home}/agent"])
        await self.x.run(["chmod", "0755", self.state_dir, home, f"{home}/agent"])
        argv = [
            "ip", "netns", "exec", ns,
            "unshare", "--mount", "--propagation", "private", "--",
            self.python, "-m", "appliances.lab.nsinit", "--tmpfs", "/run", "--",
            self.python, "-m", "mgmt.cli", "agent", "--role", plan.role, "--id", plan.name,
            "--state-dir", f"{home}/agent", "--listen", str(plan.control_ip.ip),
            "--port", str(AGENT_PORT), "--ca", f"{pki}/ca.pem", "--cert", f"{pki}/agent.pem",
            "--key", f"{pki}/agent.key",
        ]
        if plan.heartbeat_url:
            argv += ["--heartbeat-url", plan.heartbeat_url,
                     "--heartbeat-interval", f"{plan.heartbeat_interval:g}"]
        await self.x.spawn(argv, log=self.log(plan.name, "agent"), env=IPSEC_DATAPATH)

    async def _start_router_from_image(self, plan: RouterPlan, ns: str) -> None:
        """The image's own ``skiff boot --run`` over the shared extraction of the root file
        system archive plan.image, with the plan's boot configuration as ``dir:``
        (appliances.image.imageroot); it configures the control NIC and runs the agent."""
        from appliances.image import imageroot
        from mgmt.orchestration import bootconfig as writer

        assert plan.image is not None
        try:
            lower, sha = await imageroot.ensure_root(self.x, plan.image)
        except imageroot.ImageRootError as exc:
            raise HostError(f"router {plan.name}: {exc}") from None
        management = str(next(plan.control_ip.network.hosts()))  # the host's control address
        config = writer.boot_config(plan, management_address=management)
        root = imageroot.ApplianceRoot(self.appliance_dir(plan.name))
        await self.x.run(["chmod", "0755", self.state_dir])
        await imageroot.prepare(self.x, root, sha, writer.files(plan, config))
        await self.x.spawn(["ip", "netns", "exec", ns,
                            *imageroot.boot_argv(self.python, lower, root,
                                                 local=self.x.where == "local")],
                           log=self.log(plan.name, "agent"), env=IPSEC_DATAPATH)

    async def _static(self, ns: str, plan: RouterPlan) -> None:
        """The NICs' static addresses and the default route the plan names."""
        for nic in plan.nics:
            if nic.address:
                await self.ip(ns, "address", "replace", nic.address, "dev", nic.device)
        if plan.gateway:
            await self.ip(ns, "route", "replace", "default", "via", plan.gateway)

    async def start_instance(self, plan: InstancePlan) -> None:
        ns = await self._nics(plan.name, plan.nics)
        home = self.appliance_dir(plan.name)
        if plan.vnc is not None:
            await self._start_vnc(plan.name, plan.vnc)
        if not await self._alive(ns, "httpd"):
            await self.x.spawn(["ip", "netns", "exec", ns, self.python, "-m",
                                "appliances.lab.httpd", "--name", plan.hostname, "--port", "80"],
                               log=self.log(plan.name, "httpd"))
        if not await self._alive(ns, "udhcpc"):
            await self.x.run(["mkdir", "-p", home])
            script = f"{self.state_dir}/udhcpc.sh"
            await self.x.write_file(script, UDHCPC_SCRIPT.read_bytes(), 0o755)
            device = plan.nics[0].device if plan.nics else "eth0"
            await self.x.spawn(
                ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-i", device, "-s",
                 script, "-x", f"hostname:{plan.hostname}", "-t", "20", "-T", "1", "-A", "2",
                 "-O", "staticroutes", "-O", "mtu", "-O", "search"],
                log=self.log(plan.name, "dhcp"),
                env={"SKIFF_RESOLV_CONF": f"/etc/netns/{ns}/resolv.conf",
                     "SKIFF_LEASE_FILE": f"{home}/lease"},
            )

    async def _start_vnc(self, name: str, vnc: VncPlan) -> None:
        """Xvfb and x11vnc for the instance, on the host (see the module docstring).
        A display already running is replaced: the plan carries a new password."""
        await self._stop_vnc(name)
        home = self.appliance_dir(name)
        await self.x.run(["mkdir", "-p", home])
        passwd = f"{home}/vnc.passwd"
        await self.x.write_file(passwd, f"{vnc.password}\n".encode(), 0o600)
        pid = await self.x.spawn(
            [self.python, "-m", "appliances.lab.vncserver", "--name", name, "--listen",
             vnc.address, "--port", str(vnc.port), "--passwdfile", passwd],
            log=self.log(name, "vnc"))
        await self.x.write_file(f"{home}/vnc.pid", f"{pid}\n".encode(), 0o644)

    async def _stop_vnc(self, name: str) -> None:
        """Stop the instance's display: TERM to the launcher's process group (it stops
        Xvfb and x11vnc), then KILL to what is left of it."""
        pidfile = f"{self.appliance_dir(name)}/vnc.pid"
        res = await self.x.run(["cat", pidfile], check=False)
        pid = res.stdout.strip() if res.ok else ""
        if not pid.isdigit():
            return
        cmd = await self.x.run(["cat", f"/proc/{pid}/cmdline"], check=False)
        if cmd.ok and "appliances.lab.vncserver" in cmd.stdout and name in cmd.stdout:
            await self.x.run(["kill", "-TERM", "--", f"-{pid}"], check=False)
            for _ in range(50):
                await asyncio.sleep(0.1)
                if not (await self.x.run(["kill", "-0", "--", f"-{pid}"], check=False)).ok:
                    break
            else:
                await self.x.run(["kill", "-KILL", "--", f"-{pid}"], check=False)
        await self.x.run(["rm", "-f", pidfile], check=False)

    async def _alive(self, ns: str, what: str) -> bool:
        """Whether a process whose command line mentions ``what`` runs in ns."""
        res = await self.x.run(["ip", "netns", "pids", ns], check=False)
        for pid in res.stdout.split():
            cmd = await self.x.run(["cat", f"/proc/{pid}/cmdline"], check=False)
            if what in cmd.stdout:
                return True
        return False

    async def lease(self, name: str) -> dict[str, str]:
        """The instance's last DHCP event (udhcpc.sh's key=value lines), or {}."""
        res = await self.x.run(["cat", f"{self.appliance_dir(name)}/lease"], check=False)
        return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)

    async def stop(self, name: str) -> None:
        """Kill everything in the namespace and delete it (links go with it), and the
        instance's VNC display on the host."""
        await self._stop_vnc(name)
        ns = self.ns(name)
        if ns not in await self.namespaces():
            return
        for sig in ("TERM", "KILL"):
            res = await self.x.run(["ip", "netns", "pids", ns], check=False)
            pids = res.stdout.split()
            if not pids:
                break
            await self.x.run(["kill", f"-{sig}", *pids], check=False)
            for _ in range(30):
                await asyncio.sleep(0.1)
                if not (await self.x.run(["ip", "netns", "pids", ns], check=False)).stdout.strip():
                    break
        await self.x.run(["ip", "netns", "delete", ns], check=False)
        await self.x.run(["rm", "-rf", f"/etc/netns/{ns}"], check=False)

    async def destroy(self, name: str) -> None:
        await self.stop(name)
        await self.x.run(["rm", "-rf", self.appliance_dir(name)], check=False)

    async def running(self) -> set[str]:
        return {ns[len(self.prefix):] for ns in await self.namespaces()
                if ns.startswith(self.prefix) and self._is_appliance(ns[len(self.prefix):])}

    @staticmethod
    def _is_appliance(name: str) -> bool:
        """Router, system VM and instance names as the orchestrator makes them (r-7-VM,
        s-3-VM, v-4-VM, i-2-9-VM)."""
        return bool(re.fullmatch(r"[rsvi](-[0-9]+)+-VM", name))

