"""Writes a system VM's boot configuration from a RouterPlan (format: images/README.md).

Three forms, for the three ways an appliance can start: a directory (the lab
runtime hands it to ``skiff boot --source dir:...``), a config drive (a small
vfat image labelled SKIFFBOOT that a VM gets as a second disk) and a kernel
command line word (``skiff.boot=json:...``, when it fits in 2048 bytes).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from appliances.agent.bootconfig import (
    BOOT_JSON,
    CA_FILE,
    CERT_FILE,
    CMDLINE_MAX,
    DRIVE_LABEL,
    KEY_FILE,
    BootConfig,
    Control,
    Heartbeat,
    Management,
    Pki,
    encode_inline,
)
from appliances.common.proc import run
from mgmt.orchestration.hosts.driver import HostError, RouterPlan

#: A FAT12 image of this size holds the four small files with room to spare.
DRIVE_KIB = 1024


def boot_config(plan: RouterPlan, *, management_address: str, management_port: int = 8080,
                gateway: str | None = None, ssh_keys: Sequence[str] = (),
                agent_port: int = 8443, inline_pki: bool = False,
                role: str | None = None) -> BootConfig:
    """The validated configuration for plan's appliance (ValueError if it is not valid).
    The role is the plan's (a console proxy or storage VM's plan is RouterPlan-shaped)
    unless ``role`` says otherwise. The
    plan's heartbeat URL and interval, when it has one, go in too."""
    control = next((n for n in plan.nics if n.role == "control"), None)
    if control is None:
        raise HostError(f"router {plan.name} has no control NIC")
    return BootConfig(
        role=role or plan.role,
        appliance_id=plan.name,
        control=Control(device=control.device, address=plan.control_ip,
                        gateway=ipaddress.IPv4Address(gateway) if gateway else None),
        management=Management(address=management_address, port=management_port),
        agent_port=agent_port,
        ssh_authorized_keys=list(ssh_keys),
        heartbeat=Heartbeat(url=plan.heartbeat_url, interval=plan.heartbeat_interval or 5.0)
        if plan.heartbeat_url else None,
        pki=Pki(ca=plan.certs.ca, cert=plan.certs.cert, key=plan.certs.key)
        if inline_pki else None,
    )


def files(plan: RouterPlan, config: BootConfig) -> list[tuple[str, bytes, int]]:
    """(name, content, mode) of each file of a drive or directory (for writers that go
    through a host's executor rather than this machine's file system)."""
    return _files(plan, config)


def _files(plan: RouterPlan, config: BootConfig) -> list[tuple[str, bytes, int]]:
    body = config.model_dump_json(indent=2, exclude_none=True).encode() + b"\n"
    return [(BOOT_JSON, body, 0o644), (CA_FILE, plan.certs.ca.encode(), 0o644),
            (CERT_FILE, plan.certs.cert.encode(), 0o644),
            (KEY_FILE, plan.certs.key.encode(), 0o600)]


def write_directory(plan: RouterPlan, config: BootConfig, path: Path) -> Path:
    """boot.json and the PEM files in path (mode 0700; the key 0600)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    for name, data, mode in _files(plan, config):
        target = path / name
        tmp = path / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
    return path


async def write_drive(plan: RouterPlan, config: BootConfig, image: Path) -> Path:
    """A vfat config drive labelled SKIFFBOOT (mkfs.vfat + mcopy: no mount, no root)."""
    image = Path(image)
    image.parent.mkdir(parents=True, exist_ok=True)
    tmp = image.with_name(f".{image.name}.tmp")
    tmp.unlink(missing_ok=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    res = await run(["mkfs.vfat", "-C", "-n", DRIVE_LABEL, str(tmp), str(DRIVE_KIB)], env=env)
    if not res.ok:
        raise HostError(f"config drive for {plan.name}: mkfs.vfat failed: {res.output}")
    try:
        os.chmod(tmp, 0o600)
        with tempfile.TemporaryDirectory(prefix="skiff-boot-") as staging:
            folder = write_directory(plan, config, Path(staging) / "drive")
            for name, _, _ in _files(plan, config):
                res = await run(["mcopy", "-i", str(tmp), str(folder / name), f"::/{name}"],
                                env=env)
                if not res.ok:
                    raise HostError(f"config drive for {plan.name}: mcopy {name} failed: "
                                    f"{res.output}")
        tmp.replace(image)
    finally:
        tmp.unlink(missing_ok=True)
    return image


def kernel_cmdline(config: BootConfig, base: str = "") -> str:
    """``base`` plus the ``skiff.boot=json:...`` word; ValueError when the whole line
    would not fit the kernel's 2048 bytes (use a config drive then)."""
    if config.pki is None:
        raise ValueError("the kernel command line form needs inline_pki=True")
    line = " ".join(part for part in (base, encode_inline(config)) if part)
    if len(line) >= CMDLINE_MAX:
        raise ValueError(f"the command line would be {len(line)} bytes, the kernel takes "
                         f"{CMDLINE_MAX - 1}: use a config drive")
    return line
