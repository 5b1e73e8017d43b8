"""SshExecutor against an in-process SSH server on loopback (no root, no namespaces).

The server runs every command as sshd does, with ``sh -c <command line>``, so what
comes back proves the quoting: the remote shell rebuilds exactly the argv we sent.
It also serves SFTP on the local file system and authenticates by password or key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

import asyncssh
import pytest

from appliances.common.proc import CommandError
from mgmt.orchestration.hosts.driver import HostError
from mgmt.orchestration.hosts.sshexec import (
    SshExecutor,
    command_line,
    fetch_host_key,
    fingerprint,
    host_key_text,
    parse_host_key,
    spawn_argv,
)

PASSWORD = secrets.token_urlsafe(12)


class _Server(asyncssh.SSHServer):
    connections: list[asyncssh.SSHServerConnection]

    def __init__(self, connections: list) -> None:
        self.connections = connections

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.connections.append(conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == "root" and password == PASSWORD


async def _handle(process: asyncssh.SSHServerProcess) -> None:
    """What sshd does with a command: the user's shell runs it with -c."""
    data = await process.stdin.read()
    local = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        process.command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await local.communicate(data)
    process.stdout.write(out)
    process.stderr.write(err)
    process.exit(local.returncode if local.returncode >= 0 else 255)


class Stand:
    def __init__(self, tmp: Path):
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.key_path = tmp / "id_ed25519"
        self.client_key.write_private_key(str(self.key_path))
        self.key_path.chmod(0o600)
        self.connections: list[asyncssh.SSHServerConnection] = []
        self.server: asyncssh.SSHAcceptor | None = None
        self.port = 0

    @property
    def pin(self) -> str:
        return host_key_text(self.host_key.convert_to_public())

    async def start(self) -> None:
        self.server = await asyncssh.create_server(
            lambda: _Server(self.connections),
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self.client_key.export_public_key().decode()
            ),
            process_factory=_handle,
            encoding=None,
            sftp_factory=True,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    def executor(self, **kw) -> SshExecutor:
        args = {
            "host_key": self.pin,
            "port": self.port,
            "password": PASSWORD,
            "python": sys.executable,
            "mark": "tunit",
        } | kw
        return SshExecutor("127.0.0.1", **args)


@pytest.fixture
async def stand(tmp_path):
    s = Stand(tmp_path)
    await s.start()
    yield s
    s.server.close()
    await s.server.wait_closed()


@contextlib.asynccontextmanager
async def executor(stand: Stand, **kw):
    x = stand.executor(**kw)
    try:
        yield x
    finally:
        await x.close()


# -- pure functions ---------------------------------------------------------------------------


def test_command_line_refuses_what_is_not_an_argv():
    for bad in ("ip link", [], ["ip", 3], ["echo", "a\0b"]):
        with pytest.raises(ValueError):
            command_line(bad)


def test_spawn_argv_checks_env_names_and_log():
    argv = spawn_argv(["sleep", "1"], "/var/log/x.log", {"SKIFF_LAB": "a b"}, "python3")
    assert argv[:3] == ["env", "SKIFF_LAB=a b", "python3"] and argv[-3:] == [
        "/var/log/x.log",
        "sleep",
        "1",
    ]
    with pytest.raises(ValueError):
        spawn_argv(["sleep"], "/x.log", {"A B": "1"}, "python3")
    with pytest.raises(ValueError):
        spawn_argv(["sleep"], "relative.log", {}, "python3")


def test_parse_host_key_wants_type_and_base64():
    key = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    text = host_key_text(key)
    assert parse_host_key(text + " root@somewhere") == key
    for bad in (
        "",
        "AAAA",
        "ssh-dss AAAAB3Nza",
        "ssh-ed25519 not!base64",
        text.replace("ssh-ed25519", "ssh-rsa"),
    ):
        with pytest.raises(ValueError):
            parse_host_key(bad)


def test_executor_needs_exactly_one_credential():
    pin = host_key_text(asyncssh.generate_private_key("ssh-ed25519").convert_to_public())
    with pytest.raises(ValueError):
        SshExecutor("h", host_key=pin)
    with pytest.raises(ValueError):
        SshExecutor("h", host_key=pin, password="p", key_path="/k")
    with pytest.raises(ValueError):
        SshExecutor("h", host_key=pin, password="p", username="root; id")


# -- against the server -----------------------------------------------------------------------


async def test_argv_arrives_intact(stand, tmp_path):
    owned = tmp_path / "owned"
    args = [
        "a b",
        f"$(touch {owned})",
        f"`touch {owned}`",
        "'single'",
        '"double"',
        ";",
        "&&",
        "|",
        "*",
        "\\",
        "$HOME",
        "tab\there",
        "new\nline",
        "-n",
        "",
        "ünïcode",
    ]
    async with executor(stand) as x:
        res = await x.run(["printf", "%s\\n", *args])
    assert res.stdout == "".join(f"{a}\n" for a in args)
    assert not owned.exists()


async def test_input_exit_status_and_check(stand):
    async with executor(stand) as x:
        assert (await x.run(["cat"], input="from stdin")).stdout == "from stdin"
        assert (await x.run(["cat"], input=b"\x00\xffbytes")).stdout == "\x00\ufffdbytes"
        assert (await x.run(["cat"])).stdout == ""  # stdin is closed, not left open
        res = await x.run(["sh", "-c", "echo oops >&2; exit 3"], check=False)
        assert (res.rc, res.stderr, res.argv[0]) == (3, "oops\n", "sh")
        with pytest.raises(CommandError, match="rc 3"):
            await x.run(["sh", "-c", "exit 3"])


async def test_fetch_host_key_returns_the_servers_key(stand):
    assert await fetch_host_key("127.0.0.1", stand.port) == stand.pin


async def test_a_different_host_key_is_refused_naming_both(stand):
    other = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    async with executor(stand, host_key=host_key_text(other)) as x:
        with pytest.raises(HostError) as err:
            await x.run(["true"])
    text = str(err.value)
    assert "host key mismatch" in text and f"127.0.0.1:{stand.port}" in text
    assert fingerprint(other) in text
    assert fingerprint(stand.host_key.convert_to_public()) in text


async def test_key_and_password_authentication(stand):
    async with executor(stand, password=None, key_path=str(stand.key_path)) as x:
        assert (await x.run(["echo", "by key"])).stdout == "by key\n"
    async with executor(stand, password="wrong") as x:
        with pytest.raises(HostError, match="authentication with the password failed"):
            await x.run(["true"])


async def test_one_connection_made_again_after_a_loss(stand):
    async with executor(stand) as x:
        await x.run(["true"])
        await x.run(["true"])
        assert len(stand.connections) == 1
        stand.connections[0].close()  # the server drops us
        assert (await x.run(["echo", "again"])).stdout == "again\n"
        assert len(stand.connections) == 2


async def test_write_file_is_atomic_with_its_mode(stand, tmp_path):
    target = tmp_path / "sub" / "dir" / "secret.key"
    async with executor(stand) as x:
        await x.write_file(str(target), b"first", 0o600)
        await x.write_file(str(target), b"second\n", 0o640)
    assert target.read_bytes() == b"second\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret.key"]


async def test_spawn_detaches_marks_and_logs(stand, tmp_path):
    log = tmp_path / "logs" / "daemon.log"
    async with executor(stand, env={"EXTRA": "x y"}) as x:
        pid = await x.spawn(
            ["sh", "-c", "echo started $SKIFF_LAB $EXTRA; exec sleep 60"], log=str(log)
        )
    try:
        assert os.getsid(pid) == pid  # its own session: the SSH channel's end leaves it be
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"SKIFF_LAB=tunit" in environ and b"EXTRA=x y" in environ
        for _ in range(200):
            if log.exists() and log.read_text():
                break
            await asyncio.sleep(0.05)
        assert log.read_text() == "started tunit x y\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_many_commands_at_once_share_the_connection(stand):
    async with executor(stand) as x:
        results = await asyncio.gather(*(x.run(["echo", str(i)]) for i in range(30)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]
    assert len(stand.connections) == 1
