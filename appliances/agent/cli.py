"""`skiff agent`: run the appliance agent (the same program in every role)."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

from appliances.roles import ROLES

DEFAULT_PORT = 8443
DEFAULT_HEARTBEAT_INTERVAL = 5.0


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL with a host")
    return value


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError("the heartbeat interval is 0.1 to 3600 seconds")
    return seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="run the appliance agent",
        description="Serve the appliance API over HTTPS with mutual TLS and converge the "
        "appliance to the last document it was given.",
    )
    p.add_argument("--role", choices=sorted(ROLES), default="router", help="appliance role")
    p.add_argument(
        "--id",
        required=True,
        dest="appliance_id",
        help="appliance id; must be the name in the server certificate",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="where rendered configs and the last good document are kept",
    )
    p.add_argument("--listen", default="0.0.0.0", help="address to bind (the control address)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--ca", type=Path, required=True, help="CA bundle that client certificates must chain to"
    )
    p.add_argument("--cert", type=Path, required=True, help="this agent's certificate (PEM)")
    p.add_argument("--key", type=Path, required=True, help="this agent's private key (PEM)")
    p.add_argument(
        "--heartbeat-url",
        metavar="URL",
        type=_http_url,
        help="POST a signed heartbeat (identity, applied generation and document hash, "
        "convergence, version, uptime) to this http(s) URL of the management server; "
        "signed with --key, --cert attached (off unless given)",
    )
    p.add_argument(
        "--heartbeat-interval",
        metavar="SECONDS",
        type=_interval,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        help=f"seconds between heartbeats (default {DEFAULT_HEARTBEAT_INTERVAL:g}); "
        "failed ones back off up to a minute",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from appliances.agent.server import run_agent

    return run_agent(args)
