"""Prepare a fresh mount namespace, then exec a program in it.

Run under ``unshare --mount --propagation private``: mounts a tmpfs on each --tmpfs
path (so e.g. the router's /run, pid files and sockets, are its own), creates each
--mkdir directory, then replaces itself with the command after ``--``.

    python -m appliances.lab.nsinit --tmpfs /run -- python -m mgmt.cli agent ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


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
    args = parser.parse_args(own)
    if not command:
        parser.error("nothing to run after '--'")
    for path in args.tmpfs:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev",
                              "tmpfs", path], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"nsinit: mount tmpfs on {path} failed: {res.stderr.strip()}", file=sys.stderr)
            return 1
    for path in args.mkdir:
        os.makedirs(path, mode=0o755, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"nsinit: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
