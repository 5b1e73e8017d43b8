"""The boot configuration: the management server writes it, the appliance reads it; a
missing or corrupt one is refused with a message that names the problem, never a secret."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time

import aiohttp
import pytest

from appliances.agent import boot as boot_cli
from appliances.agent.bootconfig import (
    BootConfigError,
    decode_inline,
    parse_config,
    read_dir,
    source_from_cmdline,
)
from appliances.agent.unconfigured import serve_unconfigured
from appliances.common import certs
from mgmt.orchestration import bootconfig as writer
from mgmt.orchestration.hosts.driver import ApplianceCerts, NicPlan, RouterPlan

YEAR = datetime.timedelta(days=365)
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBa4Xx9eW4d0l3I6H1m8J5o2ZxkWgP1dGJv2y3b0Y2vK op@x"


def _pki(name: str, ca=None):
    ca_key, ca_cert = ca or certs.make_ca("test CA", YEAR)
    key, cert = certs.issue(name, ca_cert, ca_key, certs.SERVER,
                            certs.server_sans(name, "169.254.0.5"), YEAR)
    return ApplianceCerts(certs.cert_pem(ca_cert).decode(), certs.cert_pem(cert).decode(),
                          certs.key_pem(key).decode())


def _plan(name: str = "r-7-VM", pki: ApplianceCerts | None = None) -> RouterPlan:
    return RouterPlan(
        name=name,
        nics=(NicPlan("eth0", "02:00:00:00:00:01", "guest", 1000),
              NicPlan("eth1", "02:00:00:00:00:02", "control")),
        control_ip=ipaddress.IPv4Interface("169.254.0.5/16"),
        certs=pki or _pki(name),
    )


def _config(plan: RouterPlan, **kw):
    return writer.boot_config(plan, management_address="169.254.0.1", **kw)


def test_written_directory_reads_back(tmp_path):
    plan = _plan()
    folder = writer.write_directory(plan, _config(plan, ssh_keys=[SSH_KEY]), tmp_path / "b")
    boot = read_dir(folder)
    assert boot.config.appliance_id == "r-7-VM"
    assert boot.config.role == "router"
    assert boot.config.control.device == "eth1"
    assert str(boot.config.control.address) == "169.254.0.5/16"
    assert boot.config.ssh_authorized_keys == [SSH_KEY]
    assert boot.key == plan.certs.key.encode()
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert "key" not in repr(boot).replace("ssh_authorized_keys", "")


def test_missing_directory_and_files_are_named(tmp_path):
    with pytest.raises(BootConfigError, match="is not a directory"):
        read_dir(tmp_path / "nothing")
    plan = _plan()
    folder = writer.write_directory(plan, _config(plan), tmp_path / "b")
    (folder / "key.pem").unlink()
    with pytest.raises(BootConfigError, match="key.pem is missing"):
        read_dir(folder)
    (folder / "boot.json").unlink()
    with pytest.raises(BootConfigError, match="boot.json is missing"):
        read_dir(folder)


def test_corrupt_json_and_bad_fields(tmp_path):
    plan = _plan()
    folder = writer.write_directory(plan, _config(plan), tmp_path / "b")
    (folder / "boot.json").write_text('{"role": "router", ')
    with pytest.raises(BootConfigError, match="boot.json is not JSON"):
        read_dir(folder)
    (folder / "boot.json").write_text("[1, 2]")
    with pytest.raises(BootConfigError, match="not a JSON object"):
        read_dir(folder)
    data = json.loads(_config(plan).model_dump_json())
    data["control"]["address"] = "not-an-address"
    data["control"]["device"] = "eth1; reboot"
    data["role"] = "printer"
    data["extra"] = 1
    (folder / "boot.json").write_text(json.dumps(data))
    with pytest.raises(BootConfigError) as err:
        read_dir(folder)
    message = str(err.value)
    for field in ("control.address", "control.device", "role", "extra"):
        assert field in message
    assert "reboot" not in message and "not-an-address" not in message  # no input echoed


def test_gateway_must_be_on_the_control_network():
    plan = _plan()
    with pytest.raises(ValueError, match="not on 169.254.0.0/16"):
        _config(plan, gateway="10.9.9.9")


def test_pki_mismatches_are_refused(tmp_path):
    plan = _plan()
    folder = writer.write_directory(plan, _config(plan), tmp_path / "b")
    other = _pki("r-7-VM")  # same name, another CA and key
    (folder / "key.pem").write_text(other.key)
    with pytest.raises(BootConfigError, match="key.pem is not the key of cert.pem"):
        read_dir(folder)
    (folder / "key.pem").write_text(plan.certs.key)
    (folder / "ca.pem").write_text(other.ca)
    with pytest.raises(BootConfigError, match="cert.pem was not issued by ca.pem"):
        read_dir(folder)
    (folder / "ca.pem").write_text("garbage")
    with pytest.raises(BootConfigError, match="ca.pem is not a PEM certificate"):
        read_dir(folder)
    (folder / "key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    (folder / "ca.pem").write_text(plan.certs.ca)
    with pytest.raises(BootConfigError, match="key.pem is not an unencrypted PEM private key") \
            as err:
        read_dir(folder)
    assert "AAAA" not in str(err.value)


def test_certificate_must_name_the_appliance(tmp_path):
    plan = _plan("r-7-VM", _pki("r-8-VM"))
    folder = writer.write_directory(plan, _config(plan), tmp_path / "b")
    with pytest.raises(BootConfigError, match="names r-8-VM, not the appliance id r-7-VM"):
        read_dir(folder)


def test_kernel_command_line_round_trip():
    plan = _plan()
    line = writer.kernel_cmdline(_config(plan, inline_pki=True), "ro console=ttyS0")
    assert len(line) < 2048
    value = source_from_cmdline(line)
    assert value and value.startswith("json:")
    boot = decode_inline(value.removeprefix("json:"))
    assert boot.config.appliance_id == "r-7-VM"
    assert boot.cert == plan.certs.cert.encode()
    with pytest.raises(BootConfigError, match="not base64url"):
        decode_inline("!!!")
    with pytest.raises(ValueError, match="needs inline_pki"):
        writer.kernel_cmdline(_config(plan))
    with pytest.raises(ValueError, match="use a config drive"):
        writer.kernel_cmdline(_config(plan, inline_pki=True), "x" * 1500)


def test_parse_config_refuses_bad_ssh_keys():
    data = {"role": "router", "appliance_id": "r-1-VM",
            "control": {"device": "eth1", "address": "169.254.0.5/16"},
            "management": {"address": "169.254.0.1"},
            "ssh_authorized_keys": ["ssh-ed25519 AAAA\nPermitRootLogin yes"]}
    with pytest.raises(BootConfigError, match="ssh_authorized_keys"):
        parse_config(json.dumps(data).encode(), "test")


@pytest.mark.skipif(not (shutil.which("mkfs.vfat") and shutil.which("mcopy")),
                    reason="needs dosfstools and mtools")
async def test_config_drive_holds_the_files(tmp_path):
    plan = _plan()
    image = await writer.write_drive(plan, _config(plan), tmp_path / "boot.img")
    label = subprocess.run(["mlabel", "-i", str(image), "-s", "::"], capture_output=True,
                           text=True, env={"MTOOLS_SKIP_CHECK": "1"})
    assert "SKIFFBOOT" in label.stdout
    out = tmp_path / "copy"
    out.mkdir()
    for name in ("boot.json", "ca.pem", "cert.pem", "key.pem"):
        subprocess.run(["mcopy", "-i", str(image), f"::/{name}", str(out / name)], check=True,
                       env={"MTOOLS_SKIP_CHECK": "1"})
    assert read_dir(out).config.appliance_id == "r-7-VM"
    assert image.stat().st_mode & 0o777 == 0o600


def _args(tmp_path, source: str, **kw) -> argparse.Namespace:
    values = dict(source=source, cmdline=tmp_path / "cmdline", check=False, run=False, lab=True,
                  pki_dir=tmp_path / "pki", state_dir=tmp_path / "state",
                  status_file=tmp_path / "run" / "boot-status.json", drive_wait=0.0)
    values.update(kw)
    return argparse.Namespace(**values)


def test_skiff_boot_check(tmp_path, capsys):
    plan = _plan()
    folder = writer.write_directory(plan, _config(plan), tmp_path / "b")
    assert boot_cli.main(_args(tmp_path, f"dir:{folder}", check=True)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["appliance_id"] == "r-7-VM" and summary["ok"] is True
    assert "BEGIN" not in json.dumps(summary)


def test_skiff_boot_without_a_configuration_says_so(tmp_path, capsys):
    args = _args(tmp_path, f"dir:{tmp_path / 'absent'}")
    assert boot_cli.main(args) == 1
    assert "NO USABLE BOOT CONFIGURATION" in capsys.readouterr().err
    status = json.loads(args.status_file.read_text())
    assert status["ok"] is False and "is not a directory" in status["error"]
    assert not (tmp_path / "pki").exists()


def test_skiff_boot_source_from_the_kernel_command_line(tmp_path, capsys):
    (tmp_path / "cmdline").write_text("ro quiet skiff.boot=drive:NOPE-LABEL\n")
    args = _args(tmp_path, None)
    assert boot_cli.main(args) == 1
    assert "no drive labelled NOPE-LABEL" in json.loads(args.status_file.read_text())["error"]
    assert boot_cli.main(_args(tmp_path, "floppy:a")) == 1
    assert "unknown source" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unconfigured_agent_answers_with_the_reason():
    port, stop = _free_port(), asyncio.Event()
    status = {"ok": False, "source": "drive:SKIFFBOOT", "error": "no drive labelled SKIFFBOOT"}
    task = asyncio.create_task(serve_unconfigured("127.0.0.1", port, status, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/v1/health") as resp:
                        body = await resp.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            assert resp.status == 503
            assert body["status"] == "unconfigured"
            assert "no drive labelled" in body["boot"]["error"]
            async with session.put(f"http://127.0.0.1:{port}/v1/config", data=b"{}") as resp:
                assert resp.status in (404, 405)
    finally:
        stop.set()
        await task


async def test_the_management_side_reports_an_unconfigured_agent(tmp_path):
    """The agent's mutual-TLS status fails (it has no certificate); the server's health
    look then reads the plain-HTTP 503 and reports why the appliance is unconfigured."""
    from appliances.lab.agentclient import AgentClient
    from mgmt.orchestration.health import unconfigured_reason
    from mgmt.orchestration.hosts.driver import AgentEndpoint

    args = _args(tmp_path, f"dir:{tmp_path / 'absent'}")
    assert boot_cli.main(args) == 1  # what skiff boot --run serves, without --run
    status = json.loads(args.status_file.read_text())
    port, stop = _free_port(), asyncio.Event()
    task = asyncio.create_task(serve_unconfigured("127.0.0.1", port, status, stop))
    try:
        endpoint = AgentEndpoint("127.0.0.1", port)
        client = AgentClient(endpoint.url, "r-7-VM", ssl.create_default_context(), timeout=3)
        for _ in range(100):
            try:
                await client.status(timeout=3)
            except aiohttp.ClientSSLError:
                break  # the listener is up and speaks no TLS
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        reason = await unconfigured_reason(endpoint)
        assert reason is not None and reason.startswith("unconfigured: ")
        assert "is not a directory" in reason
    finally:
        stop.set()
        await task
    assert await unconfigured_reason(AgentEndpoint("127.0.0.1", _free_port())) is None


def test_the_heartbeat_url_travels_in_the_boot_configuration(tmp_path):
    plan = dataclasses.replace(_plan(), heartbeat_url="http://169.254.0.1:8250/skiff/v1/heartbeat",
                               heartbeat_interval=2.0)
    folder = writer.write_directory(plan, _config(plan), tmp_path / "b")
    boot = read_dir(folder)
    assert boot.config.heartbeat is not None
    assert (boot.config.heartbeat.url, boot.config.heartbeat.interval) == (
        plan.heartbeat_url, 2.0)
    agent = boot_cli.agent_args(boot, _args(tmp_path, f"dir:{folder}"))
    assert (agent.heartbeat_url, agent.heartbeat_interval) == (plan.heartbeat_url, 2.0)
    without = read_dir(writer.write_directory(_plan(), _config(_plan()), tmp_path / "c"))
    assert without.config.heartbeat is None
    assert "heartbeat" not in (tmp_path / "c" / "boot.json").read_text()
    assert boot_cli.agent_args(without, _args(tmp_path, "dir:x")).heartbeat_url is None
    body = json.loads((folder / "boot.json").read_text())
    for bad in ("ftp://x/", "http:///nohost", "http://a b/"):
        body["heartbeat"]["url"] = bad
        with pytest.raises(BootConfigError, match="heartbeat.url"):
            parse_config(json.dumps(body).encode(), "test")


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("ip") is None or os.geteuid() != 0, reason="needs root and ip")
def test_boot_announces_the_control_address(tmp_path):
    """A gratuitous ARP: the management side's stale entry for the control address (a
    recreated appliance's predecessor's MAC) takes the new appliance's MAC."""
    lab = "g" + secrets.token_hex(2)
    mgmt, appliance = f"skf-{lab}-mg", f"skf-{lab}-vm"

    def ip(*argv: str) -> str:
        return subprocess.run(["ip", *argv], check=True, capture_output=True,
                              text=True).stdout

    ip("netns", "add", mgmt)
    ip("netns", "add", appliance)
    try:
        ip("-n", mgmt, "link", "add", "name", "ctl", "type", "veth", "peer", "name", "eth1",
           "netns", appliance)
        ip("-n", mgmt, "address", "add", "169.254.9.1/24", "dev", "ctl")
        ip("-n", mgmt, "link", "set", "ctl", "up")
        ip("-n", mgmt, "neigh", "replace", "169.254.9.5", "lladdr", "02:00:00:00:00:99", "dev",
           "ctl", "nud", "stale")
        ip("-n", appliance, "link", "set", "eth1", "up")
        ip("-n", appliance, "address", "add", "169.254.9.5/24", "dev", "eth1")
        mac = json.loads(ip("-n", appliance, "-j", "link", "show", "eth1"))[0]["address"]
        code = ("import ipaddress, sys; from appliances.agent.boot import announce; "
                "sys.exit(0 if announce('eth1', ipaddress.IPv4Address('169.254.9.5')) else 1)")
        subprocess.run(["ip", "netns", "exec", appliance, sys.executable, "-c", code],
                       check=True)
        for _ in range(100):
            entry = json.loads(ip("-n", mgmt, "-j", "neigh", "show", "169.254.9.5"))
            if entry and entry[0].get("lladdr") == mac:
                break
            time.sleep(0.02)
        assert entry[0].get("lladdr") == mac, entry
    finally:
        subprocess.run(["ip", "netns", "delete", mgmt], check=False)
        subprocess.run(["ip", "netns", "delete", appliance], check=False)
