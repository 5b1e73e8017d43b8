"""`skiff boot`: the system VM's first program (skiff-agent.service runs ``skiff boot --run``).

It finds the boot configuration (``--source``, else ``skiff.boot=`` on the kernel
command line, else the drive labelled SKIFFBOOT), validates it, configures the
control interface, opens the agent port there in the boot firewall, writes the
agent's certificates, and becomes the agent. Without a usable configuration it
says why on the console and in /run/skiff/boot-status.json, and serves only an
unconfigured /v1/health and /v1/status (plain HTTP: it has no certificate) that
carry the same message.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliances.agent.bootconfig import Boot

# (bootconfig is imported when `skiff boot` runs: cryptography and pydantic cost every
# other skiff command start-up time)
CMDLINE_KEY = "skiff.boot"
DEFAULT_SOURCE = "drive:SKIFFBOOT"

BOOT_TABLE = ("inet", "skiff_boot")
DEFAULT_PORT = 8443
SSH_PORT = 22
SIOCGIFHWADDR = 0x8927


DESCRIPTION = ("The system VM's first program. Without --run it only sets up (interface, "
               "firewall, files) and exits; --check only validates.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "boot", help="read the boot configuration, set the appliance up, run the agent",
        description=DESCRIPTION)
    _arguments(p)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="drive:LABEL, dir:/path or json:... "
                   f"(default: {CMDLINE_KEY}= on the kernel command line, else {DEFAULT_SOURCE})")
    p.add_argument("--cmdline", type=Path, default=Path("/proc/cmdline"),
                   help="kernel command line file (default /proc/cmdline)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate only; print a summary")
    mode.add_argument("--run", action="store_true", help="set up, then run the agent")
    p.add_argument("--lab", action="store_true", help="in a lab namespace: leave the hostname, "
                   "the console and sshd alone")
    p.add_argument("--pki-dir", type=Path, default=Path("/etc/skiff/pki"))
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/skiff/agent"))
    p.add_argument("--status-file", type=Path, default=Path("/run/skiff/boot-status.json"))
    p.add_argument("--drive-wait", type=float, default=15.0,
                   help="seconds to wait for the boot drive to appear (default 15)")
    p.set_defaults(func=main)


def entry(argv: list[str] | None = None) -> int:
    """``python -m appliances.agent.boot``: what the image's unit runs. The same as
    ``skiff boot`` without importing every other subcommand (a faster start). The
    cycle collector stays off until the agent's modules are imported (main turns it
    back on): the imports make many objects and no cyclic garbage worth a pass."""
    gc.disable()
    parser = argparse.ArgumentParser(prog="skiff boot", description=DESCRIPTION)
    _arguments(parser)
    return main(parser.parse_args(argv))


def main(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    finally:
        gc.enable()


def _main(args: argparse.Namespace) -> int:
    from appliances.agent.bootconfig import BootConfigError

    spec = args.source or _cmdline_source(args.cmdline) or DEFAULT_SOURCE
    try:
        boot = load(spec, args.drive_wait)
    except BootConfigError as exc:
        return _failed(args, spec, exc)
    summary = {"ok": True, "source": boot.source, "role": boot.config.role,
               "appliance_id": boot.config.appliance_id,
               "control": {"device": boot.config.control.device,
                           "address": str(boot.config.control.address)},
               "management": boot.config.management.model_dump()}
    if boot.config.heartbeat is not None:
        summary["heartbeat"] = boot.config.heartbeat.model_dump()
    if args.check:
        print(json.dumps(summary, indent=2))
        return 0
    try:
        setup(boot, args)
    except BootConfigError as exc:
        return _failed(args, spec, exc)
    _write_json(args.status_file, summary)
    print(f"skiff boot: {boot.config.role} {boot.config.appliance_id} from {boot.source}, "
          f"control {boot.config.control.address} on {boot.config.control.device}", flush=True)
    if not args.run:
        return 0
    from appliances.agent.server import run_agent

    gc.enable()
    return run_agent(agent_args(boot, args))


def load(spec: str, drive_wait: float = 15.0) -> Boot:
    from appliances.agent.bootconfig import BootConfigError, decode_inline, read_dir

    kind, _, value = spec.partition(":")
    if kind == "dir" and value:
        return read_dir(Path(value))
    if kind == "json" and value:
        return decode_inline(value)
    if kind == "drive" and value:
        return read_drive(value, drive_wait)
    raise BootConfigError(spec, "unknown source; use drive:LABEL, dir:/path or json:...")


def _cmdline_source(path: Path) -> str | None:
    from appliances.agent.bootconfig import source_from_cmdline

    try:
        return source_from_cmdline(path.read_text())
    except OSError:
        return None


def read_drive(label: str, wait: float) -> Boot:
    """Mount the drive with that label read-only, read it, unmount it."""
    from appliances.agent.bootconfig import BootConfigError, read_dir

    source = f"drive:{label}"
    device = _find_label(label, wait)
    if device is None:
        raise BootConfigError(source, f"no drive labelled {label} appeared within {wait:g} s "
                              "(is the config drive attached?)")
    Path("/run/skiff").mkdir(parents=True, exist_ok=True)
    mountpoint = Path(tempfile.mkdtemp(prefix="bootdrive-", dir="/run/skiff"))
    try:
        res = subprocess.run(["mount", "-o", "ro,nosuid,nodev,noexec", "-t", "vfat,iso9660",
                              device, str(mountpoint)], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            raise BootConfigError(source, f"cannot mount {device}: {res.stderr.strip()}")
        try:
            return read_dir(mountpoint, source=f"{source} ({device})")
        finally:
            subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
    finally:
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def _find_label(label: str, wait: float) -> str | None:
    deadline = time.monotonic() + wait
    while True:
        link = Path("/dev/disk/by-label") / label
        if link.exists():
            return str(link.resolve())
        res = subprocess.run(["blkid", "-L", label], capture_output=True, text=True,
                             check=False)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip()
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def setup(boot: Boot, args: argparse.Namespace) -> None:
    """Interface, firewall, certificates, and (outside the lab) hostname and SSH."""

    c = boot.config
    _write_file(args.pki_dir / "ca.pem", boot.ca, 0o644)
    _write_file(args.pki_dir / "cert.pem", boot.cert, 0o644)
    _write_file(args.pki_dir / "key.pem", boot.key, 0o600)
    _ip(boot, "link", "set", "dev", c.control.device, "up")
    _ip(boot, "address", "replace", str(c.control.address), "dev", c.control.device)
    announce(c.control.device, c.control.address.ip)
    if c.control.gateway is not None:
        with contextlib.suppress(ValueError):
            mgmt = ipaddress.ip_address(c.management.address)
            if mgmt not in c.control.address.network:
                _ip(boot, "route", "replace", f"{mgmt}/32", "via", str(c.control.gateway),
                    "dev", c.control.device)
    ssh = bool(c.ssh_authorized_keys) and not args.lab
    args.boot_firewall = boot_table_exists()  # asked once: each nft costs a few ms
    open_boot_firewall(c.control.device, c.agent_port, ssh=ssh, exists=args.boot_firewall)
    if args.lab:
        return
    with contextlib.suppress(OSError):
        socket.sethostname(c.appliance_id)
    if ssh:
        keys = "\n".join(c.ssh_authorized_keys) + "\n"
        _write_file(Path("/root/.ssh/authorized_keys"), keys.encode(), 0o600)
        subprocess.run(["ssh-keygen", "-A"], capture_output=True, check=False)
        subprocess.run(["systemctl", "start", "ssh.service"], capture_output=True, check=False)


def _ip(boot: Boot, *argv: str) -> None:
    from appliances.agent.bootconfig import BootConfigError

    res = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BootConfigError(boot.source, f"ip {' '.join(argv)}: {res.stderr.strip()}")


def announce(device: str, address: ipaddress.IPv4Address) -> bool:
    """One gratuitous ARP for the control address (best effort). The management host's
    first health poll usually arrives before the address exists, and a recreated
    appliance gets its predecessor's address with a new MAC: either way the host
    learns the MAC now rather than at its next ARP retry (a second) or when its stale
    entry times out."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            info = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR,
                               struct.pack("256s", device.encode()[:15]))
            mac, ip = info[18:24], address.packed
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
            frame = b"\xff" * 6 + mac + b"\x08\x06" + arp
            sock.bind((device, 0))
            sock.send(frame.ljust(60, b"\0"))
    except OSError:
        return False
    return True


def boot_table_exists() -> bool:
    res = subprocess.run(["nft", "list", "table", *BOOT_TABLE], capture_output=True,
                         check=False)
    return res.returncode == 0


def open_boot_firewall(device: str | None, port: int, *, ssh: bool = False,
                       exists: bool | None = None) -> bool:
    """Rewrite the boot table (if the image's nftables.conf made it; the agent removes it
    once the role's ruleset is in place) to let the agent port in on ``device`` (on any
    interface when None: the unconfigured health answer). False when there is no table."""
    if not (boot_table_exists() if exists is None else exists):
        return False
    match = f'iifname "{device}" ' if device else ""
    family, table = BOOT_TABLE
    rules = [f"{match}tcp dport {port} accept comment \"agent\""]
    if device:
        rules.append(f"{match}icmp type echo-request accept")
    if ssh:
        rules.append(f"{match}tcp dport {SSH_PORT} accept comment \"ssh (boot key)\"")
    ruleset = (
        f"table {family} {table}\ndelete table {family} {table}\n"
        f"table {family} {table} {{\n"
        "\tchain input {\n\t\ttype filter hook input priority filter - 10; policy drop;\n"
        "\t\tiif lo accept\n\t\tct state established,related accept\n"
        "\t\tct state invalid drop\n"
        + "".join(f"\t\t{rule}\n" for rule in rules)
        + "\t}\n\tchain forward {\n"
        "\t\ttype filter hook forward priority filter - 10; policy drop;\n\t}\n}\n")
    res = subprocess.run(["nft", "-f", "-"], input=ruleset.encode(), capture_output=True,
                         check=False)
    return res.returncode == 0


def agent_args(boot: Boot, args: argparse.Namespace) -> argparse.Namespace:
    c = boot.config
    return argparse.Namespace(
        role=c.role, appliance_id=c.appliance_id, state_dir=args.state_dir,
        listen=str(c.control.address.ip), port=c.agent_port, ca=args.pki_dir / "ca.pem",
        cert=args.pki_dir / "cert.pem", key=args.pki_dir / "key.pem",
        boot_status=args.status_file,
        boot_firewall=args.boot_firewall if hasattr(args, "boot_firewall")
        else boot_table_exists(),
        heartbeat_url=c.heartbeat.url if c.heartbeat else None,
        heartbeat_interval=c.heartbeat.interval if c.heartbeat else 0.0)


def _failed(args: argparse.Namespace, spec: str, exc: Exception) -> int:
    message = f"skiff boot: NO USABLE BOOT CONFIGURATION: {exc}"
    print(message, file=sys.stderr, flush=True)
    if not args.lab and not args.check:
        _to_console(message + f"\nskiff boot: the agent answers only /v1/health and /v1/status"
                    f" (plain HTTP, port {DEFAULT_PORT}) until it is given one and restarted.\n")
    if args.check:
        return 1
    status = {"ok": False, "source": spec, "error": str(exc)}
    _write_json(args.status_file, status)
    if not args.run:
        return 1
    open_boot_firewall(None, DEFAULT_PORT)
    from appliances.agent.unconfigured import run_unconfigured

    return run_unconfigured("0.0.0.0", DEFAULT_PORT, status)


def _to_console(text: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    _write_file(path, (json.dumps(data, indent=2) + "\n").encode(), 0o644)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """temp file (created with its final mode) + fsync + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(entry())
