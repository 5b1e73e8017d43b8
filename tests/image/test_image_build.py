"""The built image: its manifest against the recipe, its hardening, its disk, and its
agent answering from the root file system in lab namespaces."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import secrets
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from appliances.common import certs
from appliances.image import labrun, qemurun
from appliances.image.manifest import sha256_file, verify
from appliances.image.recipe import load
from mgmt.orchestration import bootconfig as writer
from mgmt.orchestration.hosts.driver import ApplianceCerts, NicPlan, RouterPlan

#: The first test builds the image (its session fixture): minutes, not the default 300 s.
pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_manifest_matches_the_recipe(built_image):
    recipe = load()
    assert verify(built_image.out_dir, recipe) == []
    data = built_image.manifest_data()
    for name in recipe.all_packages():
        assert data["packages"][name]["version"], name
    assert data["python_packages"]["skiff"]
    for kind, entry in data["artifacts"].items():
        path = built_image.out_dir / entry["file"]
        assert sha256_file(path) == entry["sha256"], kind
    inputs = data["inputs"]
    assert inputs["recipe_sha256"] and inputs["wheel"]["sha256"] and inputs["mirror"]
    assert isinstance(inputs["source_date_epoch"], int)
    sums = (built_image.out_dir / "sha512sum.txt").read_text()
    assert built_image.rootfs.name in sums and "manifest.json" in sums


def test_verify_notices_a_changed_artifact(built_image, tmp_path):
    copy = tmp_path / "out"
    copy.mkdir()
    for name in ("manifest.json", "sha512sum.txt"):
        (copy / name).write_bytes((built_image.out_dir / name).read_bytes())
    (copy / built_image.rootfs.name).write_bytes(b"not the archive")
    problems = verify(copy, load())
    assert any("does not match its sha256" in p for p in problems)


def test_rootfs_is_hardened(unpacked_rootfs):
    root = unpacked_rootfs
    for line in (root / "etc/shadow").read_text().splitlines():
        name, password = line.split(":")[:2]
        assert password[:1] in ("!", "*"), f"{name} has a password"
    assert not list((root / "etc/ssh").glob("ssh_host_*")), "shared SSH host keys"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "skiff-agent.service").is_symlink()
    for unit in ("ssh.service", "haproxy.service", "keepalived.service"):
        assert not (wants / unit).exists(), f"{unit} starts at boot"
    assert (root / "etc/systemd/system/ssh.socket").resolve() == Path("/dev/null")
    assert "table inet skiff_boot" in (root / "etc/nftables.conf").read_text()
    assert "PasswordAuthentication no" in (
        root / "etc/ssh/sshd_config.d/skiff.conf").read_text()
    assert (root / "usr/local/bin/skiff").is_symlink()
    assert "net.ipv4.ip_forward = 1" in (root / "etc/sysctl.d/60-skiff.conf").read_text()


def test_qcow2_is_a_compressed_bootable_disk(built_image):
    if built_image.qcow2 is None:
        pytest.skip("built without a qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      str(built_image.qcow2)], capture_output=True, text=True,
                                     check=True).stdout)
    recipe = load()
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == (1 + recipe.disk.boot_mib + recipe.disk.root_mib) << 20
    assert built_image.qcow2.stat().st_size < 300 << 20
    subprocess.run(["qemu-img", "check", str(built_image.qcow2)], check=True,
                   capture_output=True)


def _pki(name: str, address: str = "169.254.77.2"):
    year = datetime.timedelta(days=365)
    ca_key, ca_cert = certs.make_ca("image test CA", year)
    key, cert = certs.issue(name, ca_cert, ca_key, certs.SERVER,
                            certs.server_sans(name, address), year)
    ckey, ccert = certs.issue("mgmt", ca_cert, ca_key, certs.CLIENT,
                              [x509.DNSName("mgmt")], year)
    return (ApplianceCerts(certs.cert_pem(ca_cert).decode(), certs.cert_pem(cert).decode(),
                           certs.key_pem(key).decode()),
            certs.cert_pem(ccert), certs.key_pem(ckey))


@pytest.mark.lab
def test_agent_from_the_rootfs_answers_in_a_lab_namespace(built_image, tmp_path):
    name = "r-77-VM"
    appliance, client_cert, client_key = _pki(name)
    plan = RouterPlan(name=name, nics=(NicPlan("eth1", "52:54:00:01:03:02", "control"),),
                      control_ip=ipaddress.IPv4Interface("169.254.77.2/24"), certs=appliance)
    config = writer.boot_config(plan, management_address="169.254.77.1")
    tmp_path.chmod(0o755)
    lower, root = labrun.prepare(built_image.rootfs, tmp_path / "appliance",
                                 writer.files(plan, config))
    files = _client_files(tmp_path, appliance, client_cert, client_key)
    lab = "i" + secrets.token_hex(2)
    link = labrun.create(lab, "eth1", "169.254.77.1/24")
    proc = None
    try:
        proc = labrun.start(link, lower, root, tmp_path / "agent.log",
                            env={"SKIFF_IPSEC_DATAPATH": "libipsec"})
        base = "https://169.254.77.2:8443"
        code, body = labrun.wait_ready(link, f"{base}/v1/health", proc, **files)
        log = (tmp_path / "agent.log").read_text()
        assert code == 200, log
        assert body == {"status": "ok"}
        code, status = labrun.get(link, f"{base}/v1/status", **files)
        assert code == 200
        assert status["appliance_id"] == name and status["boot"]["ok"] is True
        # the agent is the image's: its venv, its Python
        pid = _agent_pid(link)
        assert os.stat(f"/proc/{pid}/root").st_ino != os.stat("/").st_ino
        assert Path(f"/proc/{pid}/root/etc/skiff/image.json").is_file()
        code, _ = labrun.get(link, f"{base}/v1/health")  # no client certificate
        assert code != 200
    finally:
        labrun.destroy(link, proc)


def _agent_pid(link: labrun.LabLink) -> int:
    pids = subprocess.run(["ip", "netns", "pids", link.ns], capture_output=True, text=True,
                          check=True).stdout.split()
    for pid in pids:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"skiff" in cmd and b"boot" in cmd:
            return int(pid)
    raise AssertionError("no agent process in the namespace")


def _client_files(tmp_path: Path, appliance: ApplianceCerts, cert: bytes, key: bytes) -> dict:
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "c.pem", "key": tmp_path / "c.key"}
    files["ca"].write_text(appliance.ca)
    files["cert"].write_bytes(cert)
    files["key"].write_bytes(key)
    return files


@pytest.mark.skipif(not qemurun.available(), reason="qemu-system-x86_64 missing: make image-deps")
def test_qcow2_boots_under_qemu_and_its_agent_answers(built_image, tmp_path):
    """SYSLINUX, the kernel, systemd, skiff boot from the config drive, the agent: the
    whole chain, reached over mutual TLS through qemu's forwarded port."""
    if built_image.qcow2 is None:
        pytest.skip("built without a qcow2")
    name = "r-78-VM"
    appliance, client_cert, client_key = _pki(name, str(qemurun.CONTROL.ip))
    plan = RouterPlan(name=name, nics=(NicPlan("eth0", "52:54:00:01:03:02", "control"),),
                      control_ip=qemurun.CONTROL, certs=appliance)
    config = writer.boot_config(plan, management_address=qemurun.HOST)
    drive = asyncio.run(writer.write_drive(plan, config, tmp_path / "boot.img"))
    files = _client_files(tmp_path, appliance, client_cert, client_key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serial = tmp_path / "serial.log"
    proc = qemurun.start(built_image.qcow2, drive, serial, port)
    try:
        code, body = qemurun.wait_ready(name, port, proc, timeout=900, **files)
        assert code == 200, serial.read_text(errors="replace")[-4000:]
        assert body == {"status": "ok"}
        code, status = qemurun.get(name, port, "/v1/status", **files)
        assert status["boot"]["ok"] is True
        assert status["boot"]["source"].startswith("drive:SKIFFBOOT")
    finally:
        qemurun.stop(proc)
