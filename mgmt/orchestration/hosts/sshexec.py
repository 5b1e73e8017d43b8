"""SshExecutor: the Executor protocol (hosts/executor.py) over one SSH connection.

- Commands are argv lists; each element is quoted with ``shlex.join`` into the one
  command line SSH carries, and the remote user's shell splits it back into exactly
  that argv: no caller value is ever read as shell syntax.
- Long-running processes are started by a constant Python snippet on the host (new
  session, no stdin, output appended to a log file there) that prints their pid.
- Files are written over SFTP: a temp file created exclusively, fsync, chmod, then
  an atomic POSIX rename.
- The host key is pinned: ``fetch_host_key`` reads it once (addHost stores it) and
  the executor refuses a host presenting any other key, naming both fingerprints.
  Authentication is a password or a private key file; the local ssh agent, ~/.ssh
  and ~/.ssh/config are never consulted.
- One connection per host, made again on the next command after it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import secrets
import shlex
import signal
from collections.abc import Mapping, Sequence

import asyncssh

from appliances.common.proc import Result
from mgmt.orchestration.hosts.driver import HostError

HOST_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) ([A-Za-z0-9+/]+={0,3})(?: .*)?$"
)
USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: The environment variable ``skiff lab down`` finds a lab's processes by.
MARK_ENV = "SKIFF_LAB"

#: Run by the host's python: argv[1] is the log, argv[2:] the command. Popen gives the
#: process its own session, no stdin and default signal handling (a shell's ``&`` would
#: leave SIGINT ignored), and the pid printed is the process's own.
SPAWNER = """\
import os, subprocess, sys
log = sys.argv[1]
os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
with open(log, "ab") as out:
    p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
print(p.pid)
"""


# -- quoting and keys -----------------------------------------------------------------------


def command_line(argv: Sequence[str]) -> str:
    """The command line SSH carries for argv: every element quoted for a POSIX shell."""
    if isinstance(argv, str) or not argv:
        raise ValueError("a command is a non-empty argv list, not a string")
    for arg in argv:
        if not isinstance(arg, str):
            raise ValueError(f"argv element {arg!r} is not a string")
        if "\0" in arg:
            raise ValueError("an argv element contains a NUL byte")
    return shlex.join(argv)


def spawn_argv(argv: Sequence[str], log: str, env: Mapping[str, str], python: str) -> list[str]:
    """The argv that starts argv detached on the host, appending output to log."""
    if not argv:
        raise ValueError("nothing to spawn")
    if not log.startswith("/"):
        raise ValueError(f"log path {log!r} is not absolute")
    assignments = []
    for key, value in env.items():
        if not ENV_KEY_RE.match(key):
            raise ValueError(f"bad environment variable name {key!r}")
        assignments.append(f"{key}={value}")
    if "=" in python:
        raise ValueError(f"python path {python!r} contains '='")
    return ["env", *assignments, python, "-c", SPAWNER, log, *argv]


def parse_host_key(text: str) -> asyncssh.SSHKey:
    """A pinned host key, "<type> <base64>" (an OpenSSH public key line)."""
    m = HOST_KEY_RE.match(text.strip())
    if not m:
        raise ValueError("a host key is '<type> <base64>', e.g. 'ssh-ed25519 AAAAC3Nz...'")
    try:
        return asyncssh.import_public_key(f"{m.group(1)} {m.group(2)}")
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(f"host key does not decode: {exc}") from None


def host_key_text(key: asyncssh.SSHKey) -> str:
    """ "<type> <base64>" of a key, without a comment."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


async def fetch_host_key(address: str, port: int = 22, timeout: float = 15.0) -> str:
    """The host key the server at address presents, as "<type> <base64>" (for pinning)."""
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(address, port, config=[]), timeout
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise HostError(
            f"ssh {address}:{port}: cannot read the host key: {exc or type(exc).__name__}"
        ) from None
    if key is None:
        raise HostError(f"ssh {address}:{port}: the server presented no host key")
    return host_key_text(key)


# -- the executor ---------------------------------------------------------------------------


class _Client(asyncssh.SSHClient):
    """Remembers the key a server presented that was not the pinned one; tells the
    executor when the connection is gone."""

    def __init__(self, executor: SshExecutor):
        self.executor = executor
        self.presented: asyncssh.SSHKey | None = None
        self.conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.presented = key
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.executor._lost(self.conn)


#: Commands at once per connection: OpenSSH's MaxSessions is 10 by default, and the
#: SFTP channel is one more.
MAX_SESSIONS = 8
_CONNECTION_ERRORS = (OSError, asyncssh.DisconnectError, asyncssh.ChannelOpenError)


class SshExecutor:
    """Runs commands on one remote host over a persistent, host-key-pinned connection."""

    def __init__(
        self,
        address: str,
        *,
        host_key: str,
        username: str = "root",
        port: int = 22,
        password: str | None = None,
        key_path: str | None = None,
        mark: str | None = None,
        env: Mapping[str, str] | None = None,
        python: str = "python3",
        connect_timeout: float = 15.0,
        keepalive: float = 15.0,
    ):
        if not address or any(c.isspace() for c in address):
            raise ValueError(f"bad host address {address!r}")
        if not 0 < port < 65536:
            raise ValueError(f"bad ssh port {port}")
        if not USERNAME_RE.match(username):
            raise ValueError(f"bad user name {username!r}")
        if (password is None) == (key_path is None):
            raise ValueError("give either a password or a private key file")
        self.address, self.port, self.username = address, port, username
        self.pinned = parse_host_key(host_key)
        self.password = password
        self.key_path = key_path
        self.env = {**(env or {}), **({MARK_ENV: mark} if mark else {})}
        self.python = python
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.where = f"ssh {username}@{address}:{port}"
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)

    # connection --------------------------------------------------------------------------

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The live connection, made (again) if there is none."""
        async with self._lock:
            if self._conn is None:
                self._conn = await self._connect()
            return self._conn

    def _lost(self, conn: asyncssh.SSHClientConnection | None) -> None:
        if conn is not None and conn is self._conn:
            self._conn, self._sftp = None, None

    async def _connect(self) -> asyncssh.SSHClientConnection:
        client = _Client(self)
        auth: dict = (
            {
                "password": self.password,
                "client_keys": None,
                "preferred_auth": "password,keyboard-interactive",
            }
            if self.password is not None
            else {"password": None, "client_keys": [self.key_path], "preferred_auth": "publickey"}
        )
        try:
            conn, _ = await asyncio.wait_for(
                asyncssh.create_connection(
                    lambda: client,
                    self.address,
                    self.port,
                    username=self.username,
                    known_hosts=([self.pinned], [], []),
                    agent_path=None,
                    config=[],
                    x509_trusted_certs=None,
                    keepalive_interval=self.keepalive,
                    **auth,
                ),
                self.connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable:
            seen = fingerprint(client.presented) if client.presented else "(none offered)"
            raise HostError(
                f"{self.where}: host key mismatch: pinned {fingerprint(self.pinned)} "
                f"({self.pinned.get_algorithm()}), presented {seen}; refusing to connect. "
                "If the host was reinstalled, pin its new key again (update the host)."
            ) from None
        except asyncssh.PermissionDenied:
            how = "password" if self.password is not None else f"key {self.key_path}"
            raise HostError(f"{self.where}: authentication with the {how} failed") from None
        except (OSError, asyncssh.Error, TimeoutError, asyncssh.KeyImportError) as exc:
            raise HostError(f"{self.where}: cannot connect: {exc or type(exc).__name__}") from None
        return conn

    async def sftp(self) -> asyncssh.SFTPClient:
        conn = await self.connection()
        if self._sftp is None:
            try:
                self._sftp = await conn.start_sftp_client()
            except (asyncssh.Error, OSError) as exc:
                raise HostError(f"{self.where}: no SFTP: {exc}") from None
        return self._sftp

    # the Executor protocol ---------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | bytes | None = None,
    ) -> Result:
        line = command_line(argv)
        data = input.encode() if isinstance(input, str) else (input or b"")
        async with self._sessions:
            process = await self._start(line, data)
            try:
                done = await process.wait(check=False, timeout=timeout)
                rc, out, err, note = _exit_code(done), done.stdout, done.stderr, ""
            except asyncssh.TimeoutError as exc:
                process.close()
                rc, out, err = -9, exc.stdout, exc.stderr
                note = f"\n(timed out after {timeout:g} s)"
            except _CONNECTION_ERRORS as exc:
                raise HostError(
                    f"{self.where}: connection lost while running {argv[0]}: {exc}"
                ) from None
        result = Result(tuple(argv), rc, _text(out), _text(err) + note)
        return result.check() if check else result

    async def _start(self, line: str, data: bytes) -> asyncssh.SSHClientProcess:
        """Open the command's channel; a connection found dead first is made again once
        (the command had not started, so trying again is safe)."""
        for attempt in (1, 2):
            conn = await self.connection()
            try:
                process = await conn.create_process(line, encoding=None)
                if data:
                    process.stdin.write(data)
                process.stdin.write_eof()  # a command that reads stdin sees its end
                return process
            except _CONNECTION_ERRORS as exc:
                if not conn.is_closed() or attempt == 2:  # refused on a live connection
                    raise HostError(f"{self.where}: cannot open a session: {exc}") from None
                self._lost(conn)
        raise AssertionError("not reached")

    async def spawn(
        self, argv: Sequence[str], *, log: str, env: Mapping[str, str] | None = None
    ) -> int:
        full = spawn_argv(argv, log, {**self.env, **(env or {})}, self.python)
        res = await self.run(full)
        pid = res.stdout.strip()
        if not pid.isdigit():
            raise HostError(f"{self.where}: starting {argv[0]} printed no pid: {res.output}")
        return int(pid)

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        if not path.startswith("/") or path.endswith("/"):
            raise ValueError(f"{path!r} is not an absolute file path")
        parent, name = posixpath.split(posixpath.normpath(path))
        tmp = f"{parent}/.{name}.{secrets.token_hex(4)}.tmp"
        sftp = await self.sftp()
        try:
            await sftp.makedirs(parent, exist_ok=True)
            async with sftp.open(
                tmp, "x", asyncssh.SFTPAttrs(permissions=mode), encoding=None
            ) as f:
                await f.write(data)
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await f.fsync()
            await sftp.chmod(tmp, mode)
            await sftp.posix_rename(tmp, path)
        except (asyncssh.SFTPError, OSError, asyncssh.Error) as exc:
            with contextlib.suppress(asyncssh.SFTPError, OSError, asyncssh.Error):
                await sftp.remove(tmp)
            raise HostError(f"{self.where}: cannot write {path}: {exc}") from None

    async def close(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _exit_code(done: asyncssh.SSHCompletedProcess) -> int:
    if done.exit_status is not None and done.exit_status >= 0:
        return done.exit_status
    if done.exit_signal:
        try:
            return -signal.Signals[f"SIG{done.exit_signal[0]}"].value
        except KeyError:
            pass
    return -1
