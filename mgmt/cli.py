"""The `skiff` console command. Each subcommand lives with the code it drives
and exposes ``register(subparsers)``; this module only wires them together."""

from __future__ import annotations

import argparse
import sys

from appliances.agent import boot as boot_cli
from appliances.agent import cli as agent_cli
from appliances.image import cli as image_cli
from appliances.lab import cli as lab_cli
from appliances.router import cli as router_cli
from mgmt import demo as demo_cli
from mgmt.client import shell as api_cli
from mgmt.server import cli as mgmt_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skiff",
        description="Skiff: system-VM appliances and their management server.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    agent_cli.register(sub)
    boot_cli.register(sub)
    router_cli.register(sub)
    lab_cli.register(sub)
    mgmt_cli.register(sub)
    api_cli.register(sub)
    demo_cli.register(sub)
    image_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
