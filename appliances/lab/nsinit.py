"""Prepare a fresh mount namespace, then exec a program in it.

Run under ``unshare --mount --propagation private``: mounts a tmpfs on each --tmpfs
path (so e.g. the router's /run, pid files and sockets, are its own), creates each
--mkdir directory, then replaces itself with the command after ``--``.

    python -m appliances.lab.nsinit --tmpfs /run -- python -m mgmt.cli agent ...

With ``--root DIR`` the command runs chrooted in DIR instead (an appliance from the
system-VM image, appliances.image.imageroot): ``--overlay LOWER:UPPER:WORK`` first
mounts that overlay on DIR; DIR gets its own /proc, a read-only /sys, a small /dev
(null, zero, full, random, urandom, tty, net/tun, a private devpts and shm) and
each ``--bind-ro SRC:DST``; --tmpfs and --mkdir paths are then inside DIR.
``--clean-env`` passes on only PATH, LC_ALL, HOME and the SKIFF_* variables (the
host's environment is not the image's).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

#: Device nodes an appliance's /dev gets from the host's (bind mounts).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "net/tun")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MountError(RuntimeError):
    pass


def _mount(*argv: str) -> None:
    res = subprocess.run(["mount", *argv], capture_output=True, text=True)
    if res.returncode != 0:
        raise MountError(f"mount {' '.join(argv)} failed: {res.stderr.strip()}")


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root else path


def _devices(root: str) -> None:
    dev = _inside(root, "/dev")
    os.makedirs(dev, exist_ok=True)
    _mount("-t", "tmpfs", "-o", "mode=0755,nosuid,size=1m", "tmpfs", dev)
    for name in DEVICES:
        host = f"/dev/{name}"
        if not os.path.exists(host):
            continue
        target = os.path.join(dev, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w"):
            pass
        _mount("--bind", host, target)
    os.makedirs(os.path.join(dev, "pts"))
    _mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts",
           os.path.join(dev, "pts"))
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.makedirs(os.path.join(dev, "shm"))
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", os.path.join(dev, "shm"))
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", os.path.join(dev, name))
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))


def _root(args: argparse.Namespace) -> None:
    root = args.root
    if args.overlay:
        lower, upper, work = args.overlay.split(":")
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={lower},upperdir={upper},workdir={work}", root)
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", _inside(root, "/proc"))
    _mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", _inside(root, "/sys"))
    _devices(root)
    for spec in args.bind_ro:
        source, target = spec.split(":", 1)
        target = _inside(root, target)
        os.makedirs(target, exist_ok=True)
        _mount("--bind", source, target)
        _mount("-o", "remount,bind,ro", target)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("nsinit: missing '-- COMMAND...'", file=sys.stderr)
        return 2
    split = argv.index("--")
    own, command = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(prog="nsinit", description=__doc__)
    parser.add_argument("--tmpfs", action="append", default=[], metavar="PATH",
                        help="mount a private tmpfs here (repeatable)")
    parser.add_argument("--mkdir", action="append", default=[], metavar="PATH",
                        help="create this directory after mounting (repeatable)")
    parser.add_argument("--root", metavar="DIR", help="chroot into DIR (with its own "
                        "/proc, /sys, /dev) before running the command")
    parser.add_argument("--overlay", metavar="LOWER:UPPER:WORK",
                        help="mount this overlay on --root first")
    parser.add_argument("--bind-ro", action="append", default=[], metavar="SRC:DST",
                        help="bind SRC read-only at DST inside --root (repeatable)")
    parser.add_argument("--clean-env", action="store_true",
                        help="run the command with PATH, LC_ALL, HOME and SKIFF_* only")
    args = parser.parse_args(own)
    if not command:
        parser.error("nothing to run after '--'")
    if (args.overlay or args.bind_ro) and not args.root:
        parser.error("--overlay and --bind-ro need --root")
    root = args.root or ""
    try:
        if root:
            _root(args)
        for path in args.tmpfs:
            _mount("-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", _inside(root, path))
    except (MountError, OSError, ValueError) as exc:
        print(f"nsinit: {exc}", file=sys.stderr)
        return 1
    if root:
        os.chroot(root)
        os.chdir("/")
    for path in args.mkdir:
        os.makedirs(path, mode=0o755, exist_ok=True)
    env = dict(os.environ)
    if args.clean_env:
        env = {k: v for k, v in os.environ.items() if k.startswith("SKIFF_")}
        env.update(PATH=CLEAN_PATH, LC_ALL="C.UTF-8", HOME="/root")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"nsinit: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
