"""A throwaway local PostgreSQL cluster for tests: unix socket only, no TCP.

``start_cluster()`` runs initdb and pg_ctl in a temporary directory and
returns a PgCluster whose ``url`` is ``postgresql+asyncpg://skiff@/skiff?host=<socketdir>``;
``stop_cluster()`` stops it and deletes the directory; ``new_database()`` and
``migrated_database()`` add a fresh database to it. initdb and postgres
refuse to run as root, so as root they run as the ``postgres`` system user
(or a ``skiffpg`` one created for the purpose) through runuser.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("initdb", "pg_ctl", "postgres", "createdb")
SUPERUSER = "skiff"
DATABASE = "skiff"
FALLBACK_USER = "skiffpg"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres, createdb) not found: install the Debian "
    "package 'postgresql' (make test does), or set SKIFF_PG_BINDIR"
)
# Durability does not matter for a cluster that is deleted after the run.
TEMPLATE = "skiff_template"
_names = itertools.count()
_template_ready: set[str] = set()  # clusters (by base folder) whose template is migrated
FAST_OPTIONS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200")


@dataclass(frozen=True)
class PgCluster:
    base: Path
    bindir: Path
    run_as: str | None  # system user the server runs as, None for the current user

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socketdir(self) -> Path:
        return self.base / "sock"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socketdir}"


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in BINARIES)


def find_bindir() -> Path | None:
    """$SKIFF_PG_BINDIR, then initdb on PATH, then /usr/lib/postgresql/<newest>/bin."""
    candidates: list[Path] = []
    if os.environ.get("SKIFF_PG_BINDIR"):
        candidates.append(Path(os.environ["SKIFF_PG_BINDIR"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version(p.parent.name), reverse=True)
    return next((c for c in candidates if _has_server(c)), None)


def _version(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (0,)


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None if they can."""
    if find_bindir() is None:
        return INSTALL_HINT
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser (util-linux) to start PostgreSQL as another user"
    return None


def _server_user() -> str | None:
    """None when not root; else a system user to run initdb/postgres as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
         FALLBACK_USER],
        check=True, capture_output=True,
    )
    return FALLBACK_USER


def _run(cluster: PgCluster, argv: list[str]) -> None:
    if cluster.run_as is not None:
        argv = ["runuser", "-u", cluster.run_as, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cluster.base, check=False)
    if proc.returncode != 0:
        log = cluster.base / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{tail}"
        )


def start_cluster(parent: Path | None = None) -> PgCluster:
    """initdb + pg_ctl start + createdb; raises RuntimeError with the server's words."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(INSTALL_HINT)
    base = Path(tempfile.mkdtemp(prefix="skiff-pg-", dir=parent))
    cluster = PgCluster(base=base, bindir=bindir, run_as=_server_user())
    cluster.socketdir.mkdir(mode=0o700)
    if cluster.run_as is not None:
        entry = pwd.getpwnam(cluster.run_as)
        for path in (base, cluster.socketdir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        _run(cluster, [str(bindir / "initdb"), "-D", str(cluster.datadir), "-U", SUPERUSER,
                       "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"])
        options = f"-k {cluster.socketdir} -c listen_addresses='' {FAST_OPTIONS}"
        # -l: the server must not inherit our pipes, or run() would wait for it to exit.
        _run(cluster, [str(bindir / "pg_ctl"), "-D", str(cluster.datadir), "-o", options,
                       "-l", str(base / "server.log"), "-w", "-t", "60", "start"])
        _create_database(cluster, DATABASE)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _create_database(cluster: PgCluster, name: str) -> None:
    _run(cluster, [str(cluster.bindir / "createdb"), "-h", str(cluster.socketdir),
                   "-U", SUPERUSER, name])


def stop_cluster(cluster: PgCluster) -> None:
    """Stop the server (immediate: nothing in it is worth keeping) and delete it."""
    if (cluster.datadir / "postmaster.pid").exists():
        with suppress(RuntimeError):
            _run(cluster, [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.datadir),
                           "-m", "immediate", "-w", "stop"])
    shutil.rmtree(cluster.base, ignore_errors=True)


@contextmanager
def throwaway_cluster(parent: Path | None = None) -> Iterator[PgCluster]:
    cluster = start_cluster(parent)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


async def new_database(cluster: PgCluster, template: str | None = None) -> str:
    """URL of a new database (empty, or a copy of ``template``) in the cluster."""
    import asyncpg

    name = f"t{next(_names)}"
    conn = await asyncpg.connect(host=str(cluster.socketdir), user=SUPERUSER, database="postgres")
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return cluster.url(name)


async def migrated_database(cluster: PgCluster) -> str:
    """URL of a new database copied from a template migrated once per cluster."""
    import asyncpg

    from mgmt.db.engine import open_database

    key = str(cluster.base)
    if key not in _template_ready:
        conn = await asyncpg.connect(
            host=str(cluster.socketdir), user=SUPERUSER, database="postgres"
        )
        try:
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        template = await open_database(cluster.url(TEMPLATE))
        await template.close()
        _template_ready.add(key)
    return await new_database(cluster, TEMPLATE)
