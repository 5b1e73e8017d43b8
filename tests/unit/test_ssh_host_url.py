"""How the ssh driver reads a host row: URL options, credentials, the pinned key."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from urllib.parse import quote

import asyncssh
import pytest

from mgmt.orchestration.hosts.driver import HostError
from mgmt.orchestration.hosts.ssh import SshHostDriver, host_key_text, parse_ssh_url

PIN = host_key_text(asyncssh.generate_private_key("ssh-ed25519").convert_to_public())


def row(url: str, **kw) -> SimpleNamespace:
    return SimpleNamespace(
        **({"name": "h", "url": url, "username": None, "password": None, "host_key": PIN} | kw)
    )


def test_parse_ssh_url():
    u = parse_ssh_url("ssh://admin@kvm2.example:2222/?statedir=/srv/skiff&prefix=sk-")
    assert (u.address, u.port, u.username) == ("kvm2.example", 2222, "admin")
    assert u.options == {"statedir": "/srv/skiff", "prefix": "sk-"}
    assert parse_ssh_url("ssh://10.0.0.5").port == 22
    for bad in (
        "http://kvm2",
        "ssh://",
        "ssh://u:pw@kvm2",
        "ssh://kvm2/some/path",
        "ssh://kvm2/?shell=1",
        "ssh://kvm2/?prefix=a&prefix=b",
        "ssh://kvm2:99999",
    ):
        with pytest.raises(ValueError):
            parse_ssh_url(bad)


def test_for_host_password_key_and_pin(monkeypatch):
    monkeypatch.delenv("SKIFF_SSH_KEY", raising=False)
    d = SshHostDriver.for_host(row("ssh://kvm2", username="root", password="pw"))
    assert (d.x.password, d.x.key_path, d.x.where) == ("pw", None, "ssh root@kvm2:22")
    assert d.runtime.prefix == "skf-" and d.state_dir == "/var/lib/skiff/host"
    d = SshHostDriver.for_host(row("ssh://ops@kvm2/?keyfile=/etc/skiff/id"))
    assert (d.x.password, d.x.key_path, d.x.username) == (None, "/etc/skiff/id", "ops")
    monkeypatch.setenv("SKIFF_SSH_KEY", "/k")
    assert SshHostDriver.for_host(row("ssh://kvm2")).x.key_path == "/k"
    monkeypatch.delenv("SKIFF_SSH_KEY")
    with pytest.raises(HostError, match="needs a password or a private key"):
        SshHostDriver.for_host(row("ssh://kvm2"))
    with pytest.raises(HostError, match="no SSH host key was pinned"):
        SshHostDriver.for_host(row("ssh://kvm2", password="pw", host_key=None))
    with pytest.raises(HostError, match="host h: "):
        SshHostDriver.for_host(row("ssh://kvm2", password="pw", host_key="ssh-ed25519 !!"))


def test_for_host_of_a_lab_remote_host():
    url = "ssh://root@198.18.1.11:22/?lab=t1&keyfile=/k&statedir=/tmp/s&prefix=skf-t1-host1-"
    d = SshHostDriver.for_host(row(url))
    assert d.x.env["SKIFF_LAB"] == "t1" and d.x.python == sys.executable
    assert d.runtime.prefix == "skf-t1-host1-"
    with pytest.raises(HostError, match="prefix starts with skf-t1-"):
        SshHostDriver.for_host(row(url.replace("prefix=skf-t1-", "prefix=skf-other-")))


def test_a_keyfile_in_the_url_wins_over_the_rows_password():
    """Ansible's cs_host must send a password; the URL's key is still what logs in."""
    d = SshHostDriver.for_host(row("ssh://kvm2/?keyfile=/etc/skiff/id", username="root",
                                   password="unused"))
    assert (d.x.password, d.x.key_path) == (None, "/etc/skiff/id")


def test_hostkey_is_an_url_option():
    encoded = quote(PIN, safe="")
    u = parse_ssh_url(f"ssh://kvm2/?keyfile=/k&hostkey={encoded}")
    assert u.options["hostkey"] == PIN
    assert SshHostDriver.for_host(row(f"ssh://kvm2/?keyfile=/k&hostkey={encoded}")).x.pinned


async def test_add_host_refuses_a_host_presenting_another_key_than_hostkey(tmp_path):
    """addHost with hostkey= pins that key: a host presenting another is not added."""
    from test_ssh_executor import Stand

    from mgmt.api.errors import ApiError
    from mgmt.commands.infra import _prepare_ssh_host

    stand = Stand(tmp_path)
    await stand.start()
    try:
        url = (f"ssh://root@127.0.0.1:{stand.port}/?keyfile={stand.key_path}"
               f"&hostkey={quote(PIN, safe='')}")
        args = {"url": url, "hypervisor": "KVM", "username": "root", "password": "unused"}
        with pytest.raises(ApiError, match="host key mismatch") as err:
            await _prepare_ssh_host(args, "127.0.0.1")
        assert err.value.code == 530
        assert stand.connections  # it did connect, and refused the key it was shown
    finally:
        stand.server.close()
        await stand.server.wait_closed()
