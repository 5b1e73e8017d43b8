"""Prepare a fresh mount namespace, then exec a program in it.

Run under ``unshare --mount --propagation private``: sets the umask to 0022 (as an
init would), mounts a tmpfs on each --tmpfs path (so e.g. the router's /run, pid files
and sockets, are its own), creates each --mkdir directory, then replaces itself with
the command after ``--``.

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
import sys

#: Device nodes an appliance's /dev gets from the host's (bind mounts).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "net/tun")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND = 32, 4096


class MountError(RuntimeError):
    pass


def _mount(fstype: str, source: str, target: str, flags: int = 0, data: str = "") -> None:
    """mount(2) itself: an appliance's root takes a dozen mounts, and a mount(8) process
    for each would add tens of milliseconds to its start."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None) != 0:
        error = os.strerror(ctypes.get_errno())
        raise MountError(f"mount {fstype or 'bind'} on {target} failed: {error}")


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root else path


def _devices(root: str) -> None:
    dev = _inside(root, "/dev")
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", "tmpfs", dev, MS_NOSUID, "mode=0755,size=1m")
    for name in DEVICES:
        host = f"/dev/{name}"
        if not os.path.exists(host):
            continue
        target = os.path.join(dev, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w"):
            pass
        _mount("", host, target, MS_BIND)
    os.makedirs(os.path.join(dev, "pts"))
    _mount("devpts", "devpts", os.path.join(dev, "pts"), MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.makedirs(os.path.join(dev, "shm"))
    _mount("tmpfs", "tmpfs", os.path.join(dev, "shm"), MS_NOSUID | MS_NODEV, "mode=1777")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", os.path.join(dev, name))
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))


def _root(args: argparse.Namespace) -> None:
    root = args.root
    if args.overlay:
        lower, upper, work = args.overlay.split(":")
        _mount("overlay", "overlay", root, 0,
               f"lowerdir={lower},upperdir={upper},workdir={work}")
    _mount("proc", "proc", _inside(root, "/proc"), MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("sysfs", "sysfs", _inside(root, "/sys"),
           MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _devices(root)
    for spec in args.bind_ro:
        source, target = spec.split(":", 1)
        target = _inside(root, target)
        os.makedirs(target, exist_ok=True)
        _mount("", source, target, MS_BIND)
        _mount("", "none", target, MS_REMOUNT | MS_BIND | MS_RDONLY)


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
    # As an appliance's init would, before any mount point or folder is made: its files
    # must be readable by its daemons' users (dnsmasq re-reads its hosts files as
    # nobody), whatever umask the server that started it runs with (skiff_mgmt's unit
    # and supervisor use 0077).
    os.umask(0o022)
    try:
        if root:
            _root(args)
        for path in args.tmpfs:
            _mount("tmpfs", "tmpfs", _inside(root, path), MS_NOSUID | MS_NODEV, "mode=0755")
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
