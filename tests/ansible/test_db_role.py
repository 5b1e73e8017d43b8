"""skiff_db + skiff_mgmt with PostgreSQL: the role and database made in the suite's
throwaway cluster (tests/conftest.py pg_cluster, an "existing server" to skiff_db),
the server migrating its schema there at its first start, a second run changing
nothing. The role's own local-cluster path (postgresql installed, pg_createcluster,
pg_ctlcluster) runs on a throwaway Debian cluster of its own name and port, never the
machine's `main`, dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import uuid

import pytest
from mgmt_env import DOWN, INVENTORY, PLAYBOOK, Deployment, free_port
from playbooks import run_playbook

from mgmt.db.testing_pg import SUPERUSER

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]


@contextlib.asynccontextmanager
async def deployed_twice(deployment: Deployment, extra: dict):
    """The playbook's first run (it must succeed), the body's checks, then a second run
    that must change nothing; the server is stopped whatever happens."""
    tmp = deployment.root
    try:
        first = await run_playbook(PLAYBOOK, INVENTORY, tmp, extra_vars=extra)
        assert first.rc == 0 and first.failed == 0, first.text[-4000:]
        yield
        again = await run_playbook(PLAYBOOK, INVENTORY, tmp, extra_vars=extra)
        assert again.rc == 0 and again.changed == 0, again.text
    finally:
        await run_playbook(DOWN, INVENTORY, tmp, extra_vars=extra)
        for pid in deployment.marked_pids():
            os.kill(pid, signal.SIGKILL)


async def test_postgresql_deployment_serves_and_second_run_changes_nothing(pg_cluster, tmp_path):
    name = f"am_{uuid.uuid4().hex[:8]}"
    deployment = Deployment(tmp_path, name.replace("_", ""), free_port())
    extra = deployment.vars(skiff_db_engine="postgresql", skiff_db_host=str(pg_cluster.socketdir),
                            skiff_db_admin_user=SUPERUSER, skiff_db_user=name, skiff_db_name=name)
    async with deployed_twice(deployment, extra):
        facts = deployment.facts()
        assert facts["skiff_db_url"].startswith(f"postgresql://{name}:")
        assert f"/{name}?host={pg_cluster.socketdir}" in facts["skiff_db_url"]
        password_file = tmp_path / "home" / "db-password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert len(password_file.read_text().strip()) == 32
        assert await asyncio.to_thread(deployment.api().listZones) == {}
        # the schema lives in PostgreSQL: no SQLite file was made
        assert not (tmp_path / "home" / "skiff.db").exists()


def _drop_cluster(version: str, name: str) -> None:
    subprocess.run(["pg_dropcluster", "--stop", version, name], check=False,
                   capture_output=True)


def _test_clusters() -> list[tuple[str, str]]:
    """(version, name) of the Debian clusters this test made (named skifftest...)."""
    res = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                         check=False)
    rows = [line.split() for line in res.stdout.splitlines()]
    return [(r[0], r[1]) for r in rows if len(r) > 1 and r[1].startswith("skifftest")]


@pytest.mark.skipif(shutil.which("pg_createcluster") is None or os.geteuid() != 0,
                    reason="needs Debian's postgresql-common and root")
async def test_local_debian_cluster_path_on_a_throwaway_cluster(tmp_path):
    """The role's own local path (skiff_db_host empty): pg_createcluster, pg_ctlcluster
    start (no systemd here), the role and database made as the postgres user, the
    server on 127.0.0.1 with the generated password. Its own cluster name and a free
    port, never the machine's `main`; dropped afterwards."""
    for version, name in _test_clusters():  # left by an interrupted run
        _drop_cluster(version, name)
    cluster = f"skifftest{uuid.uuid4().hex[:8]}"
    deployment = Deployment(tmp_path, cluster, free_port())
    port = free_port()
    extra = deployment.vars(skiff_db_engine="postgresql", skiff_db_cluster=cluster,
                            skiff_db_port=port)
    try:
        async with deployed_twice(deployment, extra):
            assert [name for _, name in _test_clusters()] == [cluster]
            url = deployment.facts()["skiff_db_url"]
            assert url.startswith("postgresql://skiff:")
            assert url.endswith(f"@127.0.0.1:{port}/skiff")
            assert await asyncio.to_thread(deployment.api().listZones) == {}
            assert not (tmp_path / "home" / "skiff.db").exists()
    finally:
        for version, name in _test_clusters():
            if name == cluster:
                _drop_cluster(version, name)
