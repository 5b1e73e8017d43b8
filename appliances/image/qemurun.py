"""Boot the qcow2 under qemu with a config drive and reach its agent (no host driver yet).

The VM gets the image as a throwaway snapshot (``snapshot=on``: the file is not
changed), the config drive as a second read-only disk, and one NIC on qemu's
user-mode network with ``restrict=on`` (the guest reaches nothing outside) and
the agent port forwarded from 127.0.0.1 only. The boot configuration gives eth0
the address user-mode networking expects (10.0.2.15/24). Software emulation
(tcg) unless ``accel`` says otherwise: this machine's KVM does not boot a normal
guest kernel.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path

from appliances.image.labrun import parse_curl

CONTROL = ipaddress.IPv4Interface("10.0.2.15/24")
HOST = "10.0.2.2"
QEMU = "qemu-system-x86_64"


def available() -> bool:
    return shutil.which(QEMU) is not None


def start(qcow2: Path, drive: Path, serial_log: Path, port: int, *, memory_mib: int = 768,
          accel: str | None = None) -> subprocess.Popen:
    accel = accel or os.environ.get("SKIFF_QEMU_ACCEL", "tcg")
    argv = [QEMU, "-accel", accel, "-m", str(memory_mib), "-smp", "1", "-display", "none",
            "-no-reboot", "-monitor", "none", "-serial", f"file:{serial_log}",
            "-drive", f"file={qcow2},if=virtio,format=qcow2,snapshot=on",
            "-drive", f"file={drive},if=virtio,format=raw,readonly=on",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{CONTROL.ip}:8443",
            "-device", "virtio-net-pci,netdev=n0"]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def get(appliance_id: str, port: int, path: str, ca: Path, cert: Path,
        key: Path) -> tuple[int, dict]:
    """GET over mutual TLS through the forwarded port, checking the appliance's name."""
    res = subprocess.run(["curl", "-s", "-m", "3", "-w", "\n%{http_code}",
                          "--resolve", f"{appliance_id}:{port}:127.0.0.1", "--cacert", str(ca),
                          "--cert", str(cert), "--key", str(key),
                          f"https://{appliance_id}:{port}{path}"],
                         capture_output=True, text=True, check=False)
    return parse_curl(res.stdout)


def wait_ready(appliance_id: str, port: int, proc: subprocess.Popen, timeout: float,
               **tls: Path) -> tuple[int, dict]:
    """Poll /v1/health until the agent answers or qemu ends; bounded by timeout."""
    deadline = time.monotonic() + timeout
    code, data = 0, {}
    while time.monotonic() < deadline and proc.poll() is None:
        code, data = get(appliance_id, port, "/v1/health", **tls)
        if code:
            return code, data
        time.sleep(1)
    return code, data


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
