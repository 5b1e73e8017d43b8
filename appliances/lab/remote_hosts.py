"""Lab "remote hosts": namespaces that each run their own sshd, for the ssh host driver.

A remote host ``host<k>`` of lab <lab> stands in for a second hypervisor that the
management server drives over SSH (mgmt.orchestration.hosts.ssh):

- namespace ``skf-<lab>-host<k>`` is the host's own network stack. Its eth0 is on the
  lab's underlay (names.underlay_network: 198.18.<N>.<10+k>/24, MTU 1550), a port
  ``host<k>`` of the ``underlay`` bridge in the switch namespace; the ssh driver
  builds its segment bridges, VXLAN devices and control bridge ``ctl`` in it;
- sshd runs in that network namespace only, listening on the host's underlay address,
  with a host key generated for this host, root login with the lab's generated key
  (``<state_dir>/ssh/id_ed25519``, 0600) accepted only from the management server's
  underlay address, and no passwords at all. It is entered with ``nsenter --net``, not
  ``ip netns exec``: the latter gives it a private (slave) mount namespace, and the
  namespaces the driver creates over SSH would then be invisible outside. So they are
  in the machine's /run/netns, named ``skf-<lab>-host<k>-<appliance>`` (the driver's
  prefix), and ``skiff lab down --name <lab>`` removes them with the rest;
- sshd carries SKIFF_LAB=<lab>, and the driver's executor marks what it spawns the
  same way, so down stops strays too;
- the root namespace reaches the underlay through ``skf-<lab>-ul`` (198.18.<N>.254),
  made with the first remote host.

Remote hosts need the lab's local fabric first (NetnsHostDriver(<lab>).prepare()): it
owns the switch namespace and the underlay bridge, and chose <N>.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from appliances.lab import daemons, names, netns, topology
from appliances.lab.names import LabNames

SSHD = "/usr/sbin/sshd"
SSH_PORT = 22
USERNAME = "root"
UPLINK_PORT = "ul-up"  # the root link's end in the switch namespace
TOOLS = (SSHD, "ssh-keygen", "nsenter")
READY_TIMEOUT = 20.0


class RemoteHostError(RuntimeError):
    pass


@dataclass(frozen=True)
class RemoteHost:
    """How to reach one lab remote host, and where its driver keeps its state."""

    lab: str
    index: int
    address: str
    port: int
    username: str
    #: "<type> <base64>", as addHost pins it.
    host_key: str
    #: The lab's private key (0600); the host accepts it for root.
    key_path: str
    #: The ssh driver's state folder on the host (the same file system here).
    state_dir: str

    @property
    def name(self) -> str:
        return f"host{self.index}"

    @property
    def namespace(self) -> str:
        return f"{LabNames(self.lab).prefix}{self.name}"

    @property
    def prefix(self) -> str:
        """Prefix of the namespaces the ssh driver creates on this host."""
        return f"{self.namespace}-"

    @property
    def url(self) -> str:
        """The host's addHost URL (mgmt.orchestration.hosts.ssh reads it); the host key
        to pin is ``host_key``."""
        query = urlencode(
            {
                "lab": self.lab,
                "keyfile": self.key_path,
                "statedir": self.state_dir,
                "prefix": self.prefix,
            }
        )
        return f"ssh://{self.username}@{self.address}:{self.port}/?{query}"


def _paths(state_dir: Path, index: int) -> dict[str, Path]:
    home = state_dir / f"host{index}"
    return {
        "home": home,
        "client_key": state_dir / "ssh" / "id_ed25519",
        "host_key": home / "ssh_host_ed25519_key",
        "authorized_keys": home / "authorized_keys",
        "config": home / "sshd_config",
        "driver_state": home / "state",
        "log": state_dir / "logs" / f"host{index}-sshd.log",
    }


def _check(lab: str, index: int) -> LabNames:
    n = LabNames(names.check_name(lab))
    if not 1 <= index <= names.MAX_REMOTE_HOSTS:
        raise ValueError(f"remote host index {index} is outside 1..{names.MAX_REMOTE_HOSTS}")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise RemoteHostError(f"missing {', '.join(missing)} (make deps installs openssh-server)")
    return n


async def _underlay(n: LabNames) -> ipaddress.IPv4Interface:
    """The local host's underlay address: what the lab's fabric put on the bridge."""
    res = await netns.ip(
        n.switch, "-j", "-4", "address", "show", "dev", names.UNDERLAY_BRIDGE, check=False
    )
    for link in json.loads(res.stdout or "[]") if res.ok else []:
        for a in link.get("addr_info", []):
            return ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
    raise RemoteHostError(
        f"lab {n.lab} has no underlay ({n.switch} has no '{names.UNDERLAY_BRIDGE}' address): "
        f"prepare its local host first (NetnsHostDriver({n.lab!r}).prepare())"
    )


def _at(net: ipaddress.IPv4Network, host: int) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{net.network_address + host}/{net.prefixlen}")


async def _uplink(n: LabNames, net: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    """Root-namespace link skf-<lab>-ul onto the underlay (the management server's way to
    the remote hosts' sshd)."""
    link = f"{n.prefix}ul"
    mine = _at(net, names.UNDERLAY_ROOT_HOST)
    async with topology.allocation_lock():
        if link in await netns.link_names():
            return mine
        for used in await netns.root_ipv4_networks():
            if ipaddress.IPv4Interface(used).network.overlaps(net):
                raise RemoteHostError(
                    f"the underlay {net} of lab {n.lab} overlaps {used} in "
                    "this machine's root namespace; not adding a route to it"
                )
        await netns.delete_link(UPLINK_PORT, n.switch)
        await netns.add_veth(link, None, UPLINK_PORT, n.switch)
        await _mtu_up(UPLINK_PORT, n.switch, master=True)
        await netns.add_address(link, str(mine))
        await _mtu_up(link, None)
    return mine


async def _mtu_up(link: str, ns: str | None, master: bool = False) -> None:
    await netns.ip(ns, "link", "set", link, "mtu", str(names.UNDERLAY_MTU))
    if master:
        await netns.set_master(link, names.UNDERLAY_BRIDGE, ns)
    await netns.set_up(link, ns)


async def _keygen(path: Path, comment: str) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    await netns.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(0o600)


def _public(path: Path) -> str:
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def sshd_config(address: str, p: dict[str, Path]) -> str:
    """Only key login for root, only on the host's own address, no shell niceties.
    StrictModes is off because test state lives under /tmp (mode 1777); the lab writes
    the files 0600/0644 itself."""
    return "\n".join(
        [
            "# sshd of a lab remote host (appliances.lab.remote_hosts); not the machine's sshd",
            f"ListenAddress {address}:{SSH_PORT}",
            f"HostKey {p['host_key']}",
            "PidFile none",
            f"AuthorizedKeysFile {p['authorized_keys']}",
            f"AllowUsers {USERNAME}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",
            # remote: the routers' heartbeats come back over the driver's connection,
            # bound on the host's control address (mgmt.orchestration.hosts.ssh)
            "AllowTcpForwarding yes",
            "GatewayPorts clientspecified",
            "AllowAgentForwarding no",
            "AllowStreamLocalForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "PermitUserEnvironment no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


async def _sshd_pids(ns: str) -> list[int]:
    pids = []
    for pid in await netns.namespace_pids(ns):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv and argv[0] == SSHD.encode():
                pids.append(pid)
    return pids


async def _wait_ready(host: RemoteHost, pid: int, log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while True:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.address, host.port), 2.0
            )
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        except (OSError, TimeoutError):
            pass
        if not netns.pid_alive(pid) or loop.time() > deadline:
            raise RemoteHostError(
                f"sshd of {host.namespace} does not answer on "
                f"{host.address}:{host.port}:\n{daemons.tail(log)}"
            )
        await asyncio.sleep(0.05)


async def add_remote_host(lab: str, index: int, state_dir: str | Path) -> RemoteHost:
    """Build (or find) remote host ``host<index>`` of the lab and return how to reach it."""
    n = _check(lab, index)
    local = await _underlay(n)
    root_ip = await _uplink(n, local.network)
    address = _at(local.network, 10 + index)
    base = Path(state_dir)
    p = _paths(base, index)
    host = RemoteHost(
        lab,
        index,
        str(address.ip),
        SSH_PORT,
        USERNAME,
        "",
        str(p["client_key"]),
        str(p["driver_state"]),
    )
    ns = host.namespace
    if ns not in await netns.list_namespaces():
        await netns.add_namespace(ns)
    if "eth0" not in await netns.link_names(ns):
        await netns.delete_link(host.name, n.switch)
        await netns.add_veth(host.name, n.switch, "eth0", ns)
    await _mtu_up(host.name, n.switch, master=True)
    await _mtu_up("eth0", ns)
    await netns.ip(ns, "address", "replace", str(address), "dev", "eth0")

    await _keygen(p["client_key"], f"skiff lab {lab}")
    await _keygen(p["host_key"], f"skiff lab {lab} {host.name}")
    p["home"].chmod(0o755)
    p["authorized_keys"].write_text(
        f'from="{root_ip.ip}",no-agent-forwarding,no-X11-forwarding '
        f"{_public(p['client_key'])} skiff-lab-{lab}\n"
    )
    p["authorized_keys"].chmod(0o644)
    p["config"].write_text(sshd_config(host.address, p))
    host = dataclasses.replace(host, host_key=_public(p["host_key"]))

    running = await _sshd_pids(ns)
    if running:
        pid = running[0]
    else:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
        await netns.run([SSHD, "-t", "-f", str(p["config"])])
        pid = daemons.spawn_argv(
            lab,
            ["nsenter", f"--net={netns.NETNS_RUN / ns}", SSHD, "-D", "-e", "-f", str(p["config"])],
            p["log"],
        )
    await _wait_ready(host, pid, p["log"])
    return host


async def remove_remote_host(lab: str, index: int, state_dir: str | Path) -> None:
    """Stop the host's sshd and everything its driver built (its namespaces), and remove
    its files. The lab's key and the root link stay for the other hosts."""
    n = LabNames(names.check_name(lab))
    ns = f"{n.prefix}host{index}"
    doomed = [x for x in await netns.list_namespaces() if x == ns or x.startswith(f"{ns}-")]
    await asyncio.gather(*(netns.kill_namespace_processes(x) for x in doomed))
    await asyncio.gather(*(netns.delete_namespace(x) for x in doomed))
    for etc in netns.NETNS_ETC.glob(f"{ns}-*"):
        await netns.delete_namespace(etc.name)
    await netns.delete_link(f"host{index}", n.switch)
    daemons.reap()
    shutil.rmtree(_paths(Path(state_dir), index)["home"], ignore_errors=True)
