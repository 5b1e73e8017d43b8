"""`skiff mgmt`: run the management server, show the admin's keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mgmt",
        help="the management server (CloudStack API)",
        description="Run Skiff's management server or read its settings.",
    )
    cmds = p.add_subparsers(dest="mgmt_command", metavar="ACTION", required=True)

    s = cmds.add_parser(
        "serve",
        help="start the server",
        description="Serve the CloudStack API. The first start creates the "
        "database, the ROOT domain and the admin account (its password and "
        "API keys go to HOME/admin.json, readable by root only).",
    )
    _home(s)
    s.add_argument(
        "--host",
        default=_env("SKIFF_MGMT_HOST", "127.0.0.1"),
        help="address to listen on (default: $SKIFF_MGMT_HOST, else 127.0.0.1)",
    )
    s.add_argument(
        "--port",
        type=int,
        default=int(_env("SKIFF_MGMT_PORT", "8080")),
        help="port (default: $SKIFF_MGMT_PORT, else 8080)",
    )
    s.add_argument(
        "--db",
        default=_env("SKIFF_DB_URL"),
        help="database URL, e.g. postgresql://user@host/db (default: $SKIFF_DB_URL, "
        "else SQLite in HOME)",
    )
    s.add_argument(
        "--tls-cert",
        type=Path,
        default=_env("SKIFF_TLS_CERT"),
        metavar="PEM",
        help="serve the API over HTTPS with this certificate (chain) file "
        "(default: $SKIFF_TLS_CERT); needs --tls-key",
    )
    s.add_argument(
        "--tls-key",
        type=Path,
        default=_env("SKIFF_TLS_KEY"),
        metavar="PEM",
        help="the certificate's private key (default: $SKIFF_TLS_KEY)",
    )
    s.add_argument(
        "--integration-port",
        type=int,
        metavar="PORT",
        help="also serve the unauthenticated API (as root admin) on 127.0.0.1:PORT; "
        "off unless given",
    )
    s.set_defaults(func=_serve)

    k = cmds.add_parser(
        "keys",
        help="print the admin's API keys as JSON",
        description='Print {"apikey": .., "secretkey": ..} of the admin '
        "(creating the database and admin first if needed).",
    )
    _home(k)
    k.add_argument(
        "--db", default=_env("SKIFF_DB_URL"),
        help="database URL (default: $SKIFF_DB_URL, else SQLite in HOME)",
    )
    k.set_defaults(func=_keys)


def _env(name: str, default: str | None = None) -> str | None:
    """A default from the environment (a service's EnvironmentFile); unset or empty: default."""
    return os.environ.get(name) or default


def _home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, help="state folder (default: $SKIFF_HOME, else ./var)")


def _settings(args):
    from mgmt.server.app import Settings, default_home

    return Settings(
        home=(args.home or default_home()).resolve(),
        db=args.db,
        **(
            {
                "host": args.host,
                "port": args.port,
                "integration_port": args.integration_port,
                "tls_cert": args.tls_cert,
                "tls_key": args.tls_key,
            }
            if hasattr(args, "port")
            else {}
        ),
    )


def _serve(args: argparse.Namespace) -> int:
    from mgmt.server.app import serve

    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("skiff mgmt serve: --tls-cert and --tls-key go together")

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_fast(serve(_settings(args)))
    return 0


def run_fast(coroutine) -> None:
    """asyncio.run on uvloop where it is installed (Linux): about a third less
    event-loop time per request than the standard loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def _keys(args: argparse.Namespace) -> int:
    from mgmt.db.bootstrap import bootstrap
    from mgmt.db.engine import database_url, open_database

    async def keys() -> dict:
        settings = _settings(args)
        settings.home.mkdir(parents=True, exist_ok=True)
        db = await open_database(database_url(settings.home, settings.db))
        try:
            admin = await bootstrap(db, settings.home)
        finally:
            await db.close()
        return {"apikey": admin.apikey, "secretkey": admin.secretkey}

    json.dump(asyncio.run(keys()), sys.stdout)
    print()
    return 0
