"""The ``qemu`` host driver: routers as VMs booted from the system-VM image under qemu.

The same fabric as the ``netns`` driver (it is one: a ``NetnsHostDriver``
subclass): ``skf-<lab>-switch`` with the segment bridges and ``ctl``, the lab's
Internet, the root veth with the host's control address, through which the
management server reaches every agent and takes their heartbeats. Instances stay
namespaces. A router is a qemu VM instead:

- its disk is a qcow2 overlay ``<state_dir>/<name>/disk.qcow2`` whose backing
  file is the built image (``make image``: build/out/skiff-systemvm.qcow2), so
  it keeps its state across a stop (the agent's last good document) and costs
  only what it writes; destroy removes it, and it is made anew when the image
  changes (as a system VM is recreated from a new template);
- its boot configuration is a config drive (``<name>/boot.img``, vfat labelled
  SKIFFBOOT, written by mgmt.orchestration.bootconfig at every start, with the
  plan's certificates and its heartbeat URL and interval);
- each NIC of the plan is a tap device in the switch namespace (named as the
  netns driver names its veth ports) on the segment's bridge or ``ctl``, with
  the plan's MAC, on PCI slots in plan order so the guest names them eth0, eth1,
  eth2 as the plan does (``net.ifnames=0``);
- qemu itself runs in the switch namespace (where the taps are), with software
  emulation (``tcg``) unless told otherwise: this machine's KVM does not boot a
  normal guest (a boot to agent-ready takes about a minute under TCG); its serial
  console goes to ``<state_dir>/logs/<name>-console.log``, its pid to
  ``<name>/qemu.pid``.

``start_router`` returns once the agent's port answers on the control address
(or fails with the console's last lines when qemu exits or ``boot_timeout``
passes). A host row's URL::

    qemu://<lab>?image=/abs/path/skiff-systemvm.qcow2[&accel=tcg|kvm][&memory=MiB]
        [&boot_timeout=seconds]

``memory`` is the least a router VM gets (default 512: the image's kernel,
systemd and the agent need more than a namespace's 256); ``accel`` defaults to
``$SKIFF_QEMU_ACCEL`` or ``tcg``. The host hypervisor is KVM (the cluster's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from appliances.lab import names
from mgmt.orchestration import bootconfig as writer
from mgmt.orchestration.hosts.driver import (
    AgentEndpoint,
    HostError,
    HostFacts,
    HostHealth,
    RouterPlan,
)
from mgmt.orchestration.hosts.netns import NetnsHostDriver
from mgmt.orchestration.hosts.runtime import AGENT_PORT, CONTROL_BRIDGE, port_name, segment_bridge

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
MIN_MEMORY_MIB = 512
BOOT_TIMEOUT = 600.0
#: PCI slot of the first NIC; the disks come after the NICs.
FIRST_NIC_SLOT = 3
DISK_SLOT = 0x10


@dataclass(frozen=True)
class QemuUrl:
    lab: str
    image: str
    accel: str
    memory_mib: int
    boot_timeout: float


def parse_qemu_url(url: str) -> QemuUrl:
    """qemu://<lab>?image=/abs/path.qcow2[&accel=..][&memory=..][&boot_timeout=..];
    ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "qemu" or not parts.hostname:
        raise ValueError("a qemu host is qemu://<lab name>?image=/path/to/image.qcow2")
    lab = names.check_name(parts.hostname)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"image", "accel", "memory", "boot_timeout"}
    if unknown:
        raise ValueError(f"unknown parameters {', '.join(sorted(unknown))} (image, accel, "
                         "memory, boot_timeout)")
    image = query.get("image", "")
    if not image.startswith("/") or "," in image:
        raise ValueError("image=: the absolute path of the system-VM qcow2 (make image), "
                         "without commas")
    accel = query.get("accel") or os.environ.get("SKIFF_QEMU_ACCEL", "tcg")
    if accel not in ("tcg", "kvm"):
        raise ValueError("accel=: tcg or kvm")
    try:
        memory = int(query.get("memory", MIN_MEMORY_MIB))
        timeout = float(query.get("boot_timeout", BOOT_TIMEOUT))
    except ValueError:
        raise ValueError("memory= is MiB and boot_timeout= seconds: numbers") from None
    if not 128 <= memory <= 65536 or not 10 <= timeout <= 3600:
        raise ValueError("memory= is 128..65536 MiB, boot_timeout= 10..3600 s")
    return QemuUrl(lab, image, accel, memory, timeout)


class QemuHostDriver(NetnsHostDriver):
    def __init__(self, lab: str, image: str | Path, *, accel: str = "tcg",
                 memory_mib: int = MIN_MEMORY_MIB, boot_timeout: float = BOOT_TIMEOUT,
                 state_dir: str | Path | None = None):
        super().__init__(lab, state_dir)
        self.image = str(image)
        self.accel = accel
        self.memory_mib = memory_mib
        self.boot_timeout = boot_timeout

    @classmethod
    def from_url(cls, url: str) -> QemuHostDriver:
        try:
            u = parse_qemu_url(url)
        except ValueError as exc:
            raise HostError(f"host {url!r}: {exc}") from None
        return cls(u.lab, u.image, accel=u.accel, memory_mib=u.memory_mib,
                   boot_timeout=u.boot_timeout)

    # -- host -----------------------------------------------------------------------------

    async def prepare(self) -> HostFacts:
        missing = [t for t in (QEMU, QEMU_IMG, "mkfs.vfat", "mcopy") if shutil.which(t) is None]
        if missing:
            raise HostError(f"qemu host {self.lab}: missing {', '.join(missing)} "
                            "(make image-deps installs them)")
        if not Path(self.image).is_file():
            raise HostError(f"qemu host {self.lab}: no image at {self.image} (make image "
                            "builds build/out/skiff-systemvm.qcow2)")
        facts = await super().prepare()
        res = await self.x.run([QEMU, "--version"], check=False)
        version = (res.stdout.split("\n")[0].split("version")[-1].split()[:1] or ["?"])[0]
        return HostFacts(hostname=facts.hostname, cpus=facts.cpus,
                         cpu_speed_mhz=facts.cpu_speed_mhz, memory_bytes=facts.memory_bytes,
                         hypervisor_version=f"qemu {version} ({self.accel})",
                         underlay_ip=facts.underlay_ip)

    async def health(self) -> HostHealth:
        if not Path(self.image).is_file():
            return HostHealth(False, f"the image {self.image} is gone")
        return await super().health()

    # -- routers ----------------------------------------------------------------------------

    def _home(self, name: str) -> Path:
        return Path(self.runtime.appliance_dir(name))

    def _pid(self, name: str) -> int | None:
        """The VM's qemu pid if it runs (the pid file's process is qemu with -name name)."""
        try:
            pid = int((self._home(name) / "qemu.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        if Path(cmdline[0].decode(errors="replace")).name == QEMU and b"-name" in cmdline \
                and name.encode() in cmdline:
            return pid
        return None

    async def start_router(self, plan: RouterPlan) -> AgentEndpoint:
        await self._ensure_ready()
        if plan.control_ip.ip not in self.control_network:
            raise HostError(f"router {plan.name}: control address {plan.control_ip} is not in "
                            f"host {self.lab}'s control network {self.control_network}")
        if not any(n.role == "control" for n in plan.nics):
            raise HostError(f"router {plan.name} has no control NIC")
        endpoint = AgentEndpoint(str(plan.control_ip.ip), AGENT_PORT)
        if self._pid(plan.name) is None:
            home = self._home(plan.name)
            home.mkdir(parents=True, exist_ok=True)
            await self._disk(plan.name, home)
            config = writer.boot_config(plan, management_address=str(self._host_ip.ip))
            await writer.write_drive(plan, config, home / "boot.img")
            await self._taps(plan)
            await self._spawn(plan, home)
        await self._wait_agent(plan.name, endpoint)
        return endpoint

    async def _disk(self, name: str, home: Path) -> None:
        """The router's overlay on the image (kept across stops; made anew for a new image)."""
        disk, stamp = home / "disk.qcow2", home / "disk.image"
        st = os.stat(self.image)
        want = f"{self.image} {st.st_size} {int(st.st_mtime)}\n"
        if disk.exists() and stamp.exists() and stamp.read_text() == want:
            return
        disk.unlink(missing_ok=True)
        res = await self.x.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                                self.image, str(disk)], check=False)
        if not res.ok:
            raise HostError(f"router {name}: qemu-img create failed: {res.output[:500]}")
        stamp.write_text(want)

    async def _taps(self, plan: RouterPlan) -> None:
        rt = self.runtime
        present = await rt.links(self.switch)
        for nic in plan.nics:
            if nic.role != "control" and nic.vni is None:
                raise HostError(f"{plan.name} {nic.device}: a {nic.role} NIC needs a segment")
            tap = port_name(plan.name, nic.device)
            if tap not in present:
                await rt.ip(self.switch, "tuntap", "add", "dev", tap, "mode", "tap")
            bridge = CONTROL_BRIDGE if nic.role == "control" else segment_bridge(nic.vni or 0)
            await rt.ip(self.switch, "link", "set", tap, "master", bridge, "up")

    def qemu_argv(self, plan: RouterPlan, home: Path) -> list[str]:
        """qemu's command line for the router (runs in the switch namespace)."""
        memory = max(plan.memory_mib, self.memory_mib)
        argv = [QEMU, "-name", plan.name, "-accel", self.accel, "-m", str(memory),
                "-smp", str(max(1, plan.cpu_number)), "-nodefaults", "-no-user-config",
                "-display", "none", "-monitor", "none", "-no-reboot",
                "-serial", f"file:{self.runtime.log(plan.name, 'console')}",
                "-pidfile", str(home / "qemu.pid")]
        for i, nic in enumerate(plan.nics):
            argv += ["-netdev", f"tap,id=n{i},ifname={port_name(plan.name, nic.device)},"
                     "script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=n{i},mac={nic.mac},"
                     f"addr={FIRST_NIC_SLOT + i:#x}"]
        for i, (path, fmt, extra) in enumerate(((home / "disk.qcow2", "qcow2", ""),
                                                 (home / "boot.img", "raw", ",readonly=on"))):
            argv += ["-drive", f"file={path},if=none,id=d{i},format={fmt}{extra}",
                     "-device", f"virtio-blk-pci,drive=d{i},addr={DISK_SLOT + i:#x}"]
        return argv

    async def _spawn(self, plan: RouterPlan, home: Path) -> None:
        (home / "qemu.pid").unlink(missing_ok=True)
        Path(self.runtime.log(plan.name, "console")).parent.mkdir(parents=True, exist_ok=True)
        await self.x.spawn(["ip", "netns", "exec", self.switch, *self.qemu_argv(plan, home)],
                           log=self.runtime.log(plan.name, "qemu"))

    async def _wait_agent(self, name: str, endpoint: AgentEndpoint) -> None:
        """Until the agent's port accepts a connection; HostError (with the console's
        last lines) when qemu ends or boot_timeout passes."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        seen_pid = False
        while loop.time() - started < self.boot_timeout:
            if self._pid(name) is not None:
                seen_pid = True
            elif seen_pid or loop.time() - started > 10:  # qemu writes it when it starts
                raise HostError(f"router {name}: qemu is not running (see "
                                f"{self.runtime.log(name, 'qemu')}); {self._console_tail(name)}")
            with contextlib.suppress(OSError, TimeoutError):
                _, writer_ = await asyncio.wait_for(
                    asyncio.open_connection(endpoint.host, endpoint.port), 2)
                writer_.close()
                return
            await asyncio.sleep(1)
        raise HostError(f"router {name}: the agent did not open its port within "
                        f"{self.boot_timeout:.0f} s; {self._console_tail(name)}")

    def _console_tail(self, name: str, lines: int = 15) -> str:
        log = Path(self.runtime.log(name, "console"))
        try:
            text = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"no console log at {log}"
        return f"the console ({log}) ended with:\n" + "\n".join(text)

    # -- life cycle -------------------------------------------------------------------------

    def _vms(self) -> set[str]:
        d = Path(self.state_dir)
        if not d.is_dir():
            return set()
        return {p.parent.name for p in d.glob("*/qemu.pid") if self._pid(p.parent.name)}

    async def running(self) -> set[str]:
        return await super().running() | self._vms()

    async def stop(self, name: str) -> None:
        """Power the VM off (its disk stays) and remove its taps; a namespace (an
        instance) goes as with netns."""
        pid = self._pid(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self._pid(name) is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self._pid(name) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while self._pid(name) is not None:
                    await asyncio.sleep(0.1)
        (self._home(name) / "qemu.pid").unlink(missing_ok=True)
        await self._remove_taps(name)
        await super().stop(name)

    async def _remove_taps(self, name: str) -> None:
        rt = self.runtime
        present = await rt.links(self.switch)
        for i in range(8):
            tap = port_name(name, f"eth{i}")
            if tap in present:
                await rt.ip(self.switch, "link", "delete", tap, check=False)

    async def destroy(self, name: str) -> None:
        await self.stop(name)
        await super().destroy(name)
