"""A lab instance's console: Xvfb showing the instance's colour, served by x11vnc.

The namespace runtime starts one per instance that asks for a display, on the
host (not in the instance's namespace), listening on the host's control address,
where the console proxy reaches it as CloudStack's console proxy reaches a
hypervisor's VNC server. The password is read from a file (mode 0600), never
from the command line. The screen is one solid colour derived from the instance
name (``colour_of``), so a viewer can tell which instance it is looking at.

    python -m appliances.lab.vncserver --name i-2-7-VM --listen 169.254.3.1 \\
        --port 5900 --passwdfile /var/lib/skiff/lab/i-2-7-VM/vnc.passwd

Runs until SIGTERM or SIGINT, then stops Xvfb and x11vnc.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import signal
import sys
import threading
from pathlib import Path

from appliances.console.testing import X11Vnc


def colour_of(name: str) -> str:
    """The instance's screen colour: ``#rrggbb`` from a hash of its name, each channel
    kept in 0x20-0xdf so that no two colours differ only by rounding."""
    digest = hashlib.sha256(name.encode()).digest()
    return "#" + "".join(f"{0x20 + b % 0xC0:02x}" for b in digest[:3])


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m appliances.lab.vncserver", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--name", required=True, help="the instance (its screen colour)")
    p.add_argument(
        "--listen",
        required=True,
        type=ipaddress.IPv4Address,
        help="address to listen on (the host's control address)",
    )
    p.add_argument("--port", required=True, type=int, help="TCP port (5900 + n)")
    p.add_argument(
        "--passwdfile", required=True, type=Path, help="file whose first line is the VNC password"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not 1 <= args.port <= 65535:
        print(f"port {args.port} is out of range", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    colour = colour_of(args.name)
    with X11Vnc(
        colour=colour, listen=str(args.listen), port=args.port, passwdfile=args.passwdfile
    ) as vnc:
        print(
            f"{args.name}: display {vnc.display} ({colour}) on {args.listen}:{vnc.port}", flush=True
        )
        while not stop.wait(1.0):
            if any(p.poll() is not None for p in vnc.procs):
                print(f"{args.name}: Xvfb or x11vnc exited", file=sys.stderr, flush=True)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
