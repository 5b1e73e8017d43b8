"""`skiff agent`: run the appliance agent (the same program in every role)."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliances.roles import ROLES

DEFAULT_PORT = 8443


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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from appliances.agent.server import run_agent

    return run_agent(args)
