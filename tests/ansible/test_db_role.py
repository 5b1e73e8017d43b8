"""skiff_db + skiff_mgmt with PostgreSQL: the role and database made in the suite's
throwaway cluster (tests/conftest.py pg_cluster, an "existing server" to skiff_db),
the server migrating its schema there at its first start, a second run changing
nothing. The role's own local-cluster path (install postgresql, pg_ctlcluster) is
not run here: it would start the machine's Debian cluster (see ansible/README.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import uuid

import pytest
from mgmt_env import DOWN, INVENTORY, PLAYBOOK, Deployment, free_port
from playbooks import run_playbook

from mgmt.db.testing_pg import SUPERUSER

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]


async def test_postgresql_deployment_serves_and_second_run_changes_nothing(pg_cluster, tmp_path):
    name = f"am_{uuid.uuid4().hex[:8]}"
    deployment = Deployment(tmp_path, name.replace("_", ""), free_port())
    extra = deployment.vars(skiff_db_engine="postgresql", skiff_db_host=str(pg_cluster.socketdir),
                            skiff_db_admin_user=SUPERUSER, skiff_db_user=name, skiff_db_name=name)
    try:
        first = await run_playbook(PLAYBOOK, INVENTORY, tmp_path, extra_vars=extra)
        assert first.rc == 0 and first.failed == 0, first.text[-4000:]
        facts = deployment.facts()
        assert facts["skiff_db_url"].startswith(f"postgresql://{name}:")
        assert f"/{name}?host={pg_cluster.socketdir}" in facts["skiff_db_url"]
        password_file = tmp_path / "home" / "db-password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert len(password_file.read_text().strip()) == 32
        assert await asyncio.to_thread(deployment.api().listZones) == {}
        # the schema lives in PostgreSQL: no SQLite file was made
        assert not (tmp_path / "home" / "skiff.db").exists()
        again = await run_playbook(PLAYBOOK, INVENTORY, tmp_path, extra_vars=extra)
        assert again.rc == 0 and again.changed == 0, again.text
    finally:
        await run_playbook(DOWN, INVENTORY, tmp_path, extra_vars=extra)
        for pid in deployment.marked_pids():
            os.kill(pid, signal.SIGKILL)
