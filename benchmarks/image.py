"""Benchmark ``image``: building the system-VM image and starting an appliance from it.

* **build_cold_s**: `skiff image build` with an empty package and wheel cache (every
  Debian package and wheel downloaded), into a scratch folder.
* **build_warm_s**: the same build again on the now-filled cache (targets: under 2 min).
* **rootfs_mb**, **qcow2_mb**: the root file system archive and the compressed qcow2
  (target: qcow2 under 300 MB).
* **ready_lab_ms**: from starting an appliance as the lab runtime does (its mount
  namespace over an overlay of the archive's shared extraction, the image's own
  Python running `skiff boot --run` with a `dir:` boot configuration) to the agent's
  first mutual-TLS answer on /v1/health over its control interface, median of 3
  (target: under 1 s). The extraction is made before the clock starts (once per
  image, as on a host).
* **ready_qemu_s**: from starting qemu (software emulation here) on the qcow2 with a
  config drive to the agent's first mutual-TLS answer through the forwarded port, one
  run (``na`` without qemu-system-x86_64).

Needs root and the image tools (`make image-deps`). `--warm-only` skips the cold build
(uses the default cache). Run: ``.venv/bin/python benchmarks/image.py``.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import Samples, fmt, progress, result_line  # noqa: E402
from cryptography import x509  # noqa: E402

from appliances.common import certs  # noqa: E402
from appliances.image import labrun, qemurun  # noqa: E402
from appliances.image.build import DEFAULT_CACHE, BuildOptions, build_image  # noqa: E402
from mgmt.orchestration import bootconfig as writer  # noqa: E402
from mgmt.orchestration.hosts.driver import ApplianceCerts, NicPlan, RouterPlan  # noqa: E402

READY_RUNS = 3


def timed_build(out: Path, cache: Path) -> tuple[float, object]:
    started = time.perf_counter()
    artifacts = build_image(BuildOptions(out_dir=out, cache_dir=cache))
    return time.perf_counter() - started, artifacts


def ready_lab_ms(archive: Path, scratch: Path) -> Samples:
    samples = Samples()
    name = "r-1-VM"
    year = datetime.timedelta(days=365)
    ca_key, ca_cert = certs.make_ca("bench CA", year)
    key, cert = certs.issue(name, ca_cert, ca_key, certs.SERVER,
                            certs.server_sans(name, "169.254.77.2"), year)
    ckey, ccert = certs.issue("mgmt", ca_cert, ca_key, certs.CLIENT, [x509.DNSName("mgmt")],
                              year)
    pki = ApplianceCerts(certs.cert_pem(ca_cert).decode(), certs.cert_pem(cert).decode(),
                         certs.key_pem(key).decode())
    tls = {"ca": scratch / "ca.pem", "cert": scratch / "c.pem", "key": scratch / "c.key"}
    tls["ca"].write_bytes(certs.cert_pem(ca_cert))
    tls["cert"].write_bytes(certs.cert_pem(ccert))
    tls["key"].write_bytes(certs.key_pem(ckey))
    plan = RouterPlan(name=name, nics=(NicPlan("eth1", "52:54:00:01:03:02", "control"),),
                      control_ip=ipaddress.IPv4Interface("169.254.77.2/24"), certs=pki)
    config = writer.boot_config(plan, management_address="169.254.77.1")
    lower, root = labrun.prepare(archive, scratch / "appliance", writer.files(plan, config))
    for run in range(READY_RUNS):
        link = labrun.create("b" + secrets.token_hex(2), "eth1", "169.254.77.1/24")
        proc = None
        try:
            started = time.perf_counter()
            proc = labrun.start(link, lower, root, scratch / f"agent-{run}.log",
                                env={"SKIFF_IPSEC_DATAPATH": "libipsec"})
            code, _ = labrun.wait_ready(link, "https://169.254.77.2:8443/v1/health", proc,
                                        **tls)
            elapsed = (time.perf_counter() - started) * 1000
            if code != 200:
                raise SystemExit(f"the agent did not answer (HTTP {code}); see "
                                 f"{scratch}/agent-{run}.log")
            samples.add(elapsed)
            progress(f"ready in the lab: {elapsed:.0f} ms")
        finally:
            labrun.destroy(link, proc)
    return samples


def ready_qemu_s(qcow2: Path, scratch: Path) -> float:
    import asyncio
    import socket

    name = "r-2-VM"
    year = datetime.timedelta(days=365)
    ca_key, ca_cert = certs.make_ca("bench CA", year)
    key, cert = certs.issue(name, ca_cert, ca_key, certs.SERVER,
                            certs.server_sans(name, str(qemurun.CONTROL.ip)), year)
    ckey, ccert = certs.issue("mgmt", ca_cert, ca_key, certs.CLIENT, [x509.DNSName("mgmt")],
                              year)
    pki = ApplianceCerts(certs.cert_pem(ca_cert).decode(), certs.cert_pem(cert).decode(),
                         certs.key_pem(key).decode())
    tls = {"ca": scratch / "qca.pem", "cert": scratch / "qc.pem", "key": scratch / "qc.key"}
    tls["ca"].write_bytes(certs.cert_pem(ca_cert))
    tls["cert"].write_bytes(certs.cert_pem(ccert))
    tls["key"].write_bytes(certs.key_pem(ckey))
    plan = RouterPlan(name=name, nics=(NicPlan("eth0", "52:54:00:01:03:02", "control"),),
                      control_ip=qemurun.CONTROL, certs=pki)
    drive = asyncio.run(writer.write_drive(
        plan, writer.boot_config(plan, management_address=qemurun.HOST), scratch / "boot.img"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    proc = qemurun.start(qcow2, drive, scratch / "serial.log", port)
    try:
        code, _ = qemurun.wait_ready(name, port, proc, timeout=900, **tls)
    finally:
        qemurun.stop(proc)
    elapsed = time.perf_counter() - started
    if code != 200:
        raise SystemExit(f"the VM's agent did not answer (HTTP {code})")
    progress(f"ready under qemu: {elapsed:.1f} s")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-only", action="store_true",
                        help="no cold build: one build on the default cache, then the warm one")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="skiff-bench-image-"))
    scratch.chmod(0o755)
    try:
        cold_s = float("nan")
        cache = DEFAULT_CACHE
        if not args.warm_only:
            cache = scratch / "cache"
            progress("cold build (empty cache)")
            cold_s, _ = timed_build(scratch / "cold", cache)
        else:
            progress("filling the default cache")
            timed_build(scratch / "cold", cache)
        shutil.rmtree(scratch / "cold", ignore_errors=True)
        progress("warm build")
        warm_s, artifacts = timed_build(scratch / "warm", cache)
        rootfs_mb = artifacts.rootfs.stat().st_size / 1e6
        qcow2_mb = artifacts.qcow2.stat().st_size / 1e6 if artifacts.qcow2 else float("nan")
        ready = ready_lab_ms(artifacts.rootfs, scratch)
        qemu_s: float | str = "na"
        if qemurun.available() and artifacts.qcow2:
            qemu_s = ready_qemu_s(artifacts.qcow2, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"build cold {fmt(cold_s)} s, warm {fmt(warm_s)} s (target < 120 s)")
    print(f"rootfs archive {fmt(rootfs_mb)} MB, qcow2 {fmt(qcow2_mb)} MB (target < 300 MB)")
    print(f"agent ready in the lab: median {fmt(ready.median)} ms, min {fmt(ready.min)} ms "
          "(target < 1000 ms)")
    print(f"agent ready under qemu: {qemu_s if isinstance(qemu_s, str) else fmt(qemu_s)} s")
    print(result_line("image", [("build_cold_s", cold_s), ("build_warm_s", warm_s),
                                ("rootfs_mb", rootfs_mb), ("qcow2_mb", qcow2_mb),
                                ("ready_lab_ms", ready.median), ("ready_qemu_s", qemu_s)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
