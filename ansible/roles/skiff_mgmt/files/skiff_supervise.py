#!/usr/bin/env python3
"""skiff-supervise: keep one service running where systemd is not PID 1.

Containers, CI machines and this lab often have no systemd. The skiff_mgmt role
then runs the management server under this small supervisor (standard library
only) instead of the systemd unit it still renders and checks:

  skiff-supervise start   --name N --env-file F --pid-file P --log-file L -- CMD...
  skiff-supervise stop    --pid-file P [--timeout S]
  skiff-supervise restart (start's options)
  skiff-supervise status  --pid-file P

start detaches a supervisor process (its own session, stdin /dev/null) that runs
CMD with the variables of the EnvironmentFile F (KEY=VALUE lines, as systemd reads
them) added to its environment, appends CMD's output to L and restarts CMD when it
exits, after a back-off that doubles from 1 s up to 30 s (reset once CMD ran for a
minute). The supervisor carries F's variables too, so a process-marking variable
(SKIFF_LAB) marks both. P holds the supervisor's pid, P.child the server's.
SIGTERM (stop) ends CMD (SIGTERM, then SIGKILL after --timeout) and the
supervisor; SIGHUP restarts CMD, reading F again. start when one already runs,
and stop when none runs, change nothing and print so (exit 0): the role's
changed_when reads that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
START_WAIT_S = 15.0
MARK = "skiff-supervise"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments, blank lines and one level of quotes."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def running_pid(pid_file: Path) -> int | None:
    """The pid in pid_file if that process is alive and is this file's supervisor."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if state in ("Z", "X"):
        return None
    if not any(b"skiff-supervise" in part or b"skiff_supervise" in part for part in cmdline):
        return None
    return pid if str(pid_file).encode() in cmdline else None


def write_pid(path: Path, pid: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


class Supervisor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.reload = False

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.args.log_file, "a") as out:
            out.write(f"{stamp} {MARK}[{os.getpid()}] {self.args.name}: {message}\n")

    def on_term(self, _signum, _frame) -> None:
        self.stopping = True
        self.signal_child(signal.SIGTERM)

    def on_hup(self, _signum, _frame) -> None:
        self.reload = True
        self.signal_child(signal.SIGTERM)

    def signal_child(self, sig: int) -> None:
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(sig)

    def spawn(self) -> subprocess.Popen:
        env = {**os.environ, **read_env_file(Path(self.args.env_file))}
        with open(self.args.log_file, "ab") as out:
            child = subprocess.Popen(  # noqa: S603  (argv from the role, no shell)
                self.args.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
            )
        write_pid(self.child_pid_file, child.pid)
        self.log(f"started pid {child.pid}")
        return child

    @property
    def child_pid_file(self) -> Path:
        return Path(str(self.args.pid_file) + ".child")

    def wait_child(self) -> int:
        """Wait for the child; after a stop request, SIGKILL it past the timeout."""
        assert self.child is not None
        deadline = None
        while True:
            try:
                return self.child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping or self.reload:
                deadline = deadline or time.monotonic() + self.args.timeout
                if time.monotonic() > deadline:
                    self.signal_child(signal.SIGKILL)

    def run(self) -> int:
        os.umask(0o077)  # as the unit's UMask=: the server's files are root's alone
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        signal.signal(signal.SIGHUP, self.on_hup)
        write_pid(Path(self.args.pid_file), os.getpid())
        backoff = BACKOFF_FIRST_S
        try:
            while not self.stopping:
                self.reload = False
                began = time.monotonic()
                self.child = self.spawn()
                code = self.wait_child()
                self.log(f"pid {self.child.pid} exited with {code}")
                if self.stopping:
                    break
                if self.reload:
                    backoff = BACKOFF_FIRST_S
                    continue
                if time.monotonic() - began > HEALTHY_AFTER_S:
                    backoff = BACKOFF_FIRST_S
                self.log(f"restarting in {backoff:.0f} s")
                end = time.monotonic() + backoff
                while not self.stopping and time.monotonic() < end:
                    time.sleep(0.2)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        except Exception as error:
            self.log(f"gave up: {error!r}")
            raise
        finally:
            self.log("stopped")
            for path in (self.child_pid_file, Path(self.args.pid_file)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return 0


def start(args: argparse.Namespace) -> int:
    pid_file = Path(args.pid_file)
    pid = running_pid(pid_file)
    if pid is not None:
        print(f"{args.name} already running (supervisor pid {pid})")
        return 0
    for path in (args.pid_file, args.log_file):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **read_env_file(Path(args.env_file))}
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "run",
        "--name",
        args.name,
        "--env-file",
        str(args.env_file),
        "--pid-file",
        str(pid_file),
        "--log-file",
        str(args.log_file),
        "--timeout",
        str(args.timeout),
        "--",
        *args.command,
    ]
    proc = subprocess.Popen(  # noqa: S603
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        start_new_session=True,
        close_fds=True,
    )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if running_pid(pid_file) == proc.pid:
            print(f"{args.name} started (supervisor pid {proc.pid})")
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    print(f"{args.name}: the supervisor did not come up; see {args.log_file}", file=sys.stderr)
    return 1


def stop(args: argparse.Namespace) -> int:
    pid_file = Path(args.pid_file)
    pid = running_pid(pid_file)
    if pid is None:
        print(f"{args.name} not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout + 5
    while time.monotonic() < deadline and running_pid(pid_file) == pid:
        time.sleep(0.1)
    if running_pid(pid_file) == pid:
        # It did not end in time: kill it, then the server it left behind.
        child = Path(str(pid_file) + ".child")
        try:
            child_pid = int(child.read_text())
        except (OSError, ValueError):
            child_pid = None
        os.kill(pid, signal.SIGKILL)
        if child_pid is not None:
            with contextlib.suppress(OSError):
                os.kill(child_pid, signal.SIGKILL)
        for path in (child, pid_file):
            path.unlink(missing_ok=True)
    print(f"{args.name} stopped")
    return 0


def status(args: argparse.Namespace) -> int:
    pid = running_pid(Path(args.pid_file))
    print(f"{args.name} running (supervisor pid {pid})" if pid else f"{args.name} not running")
    return 0 if pid else 3


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=MARK, description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("start", "stop", "restart", "status", "run"))
    p.add_argument("--name", default="service")
    p.add_argument("--env-file", default="/dev/null")
    p.add_argument("--pid-file", required=True)
    p.add_argument("--log-file", default="/dev/null")
    p.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds between SIGTERM and SIGKILL when stopping",
    )
    own, command = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    args = p.parse_args(own)
    args.command = command
    # The supervisor runs in /: relative paths are taken from where it was started.
    for name in ("env_file", "pid_file", "log_file"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    if args.action in ("start", "restart", "run") and not args.command:
        p.error(f"{args.action} needs the service's command after --")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.action == "run":
        return Supervisor(args).run()
    if args.action == "start":
        return start(args)
    if args.action == "stop":
        return stop(args)
    if args.action == "restart":
        stop(args)
        return start(args)
    return status(args)


if __name__ == "__main__":
    sys.exit(main())
