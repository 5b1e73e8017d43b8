"""Fixtures every test folder may use.

``pg_cluster`` is one throwaway PostgreSQL cluster for the whole session (unix
socket only; mgmt.db.testing_pg); tests take fresh databases in it with
``new_database`` or ``migrated_database``. Skipped where PostgreSQL's server
binaries are missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mgmt.db.testing_pg import PgCluster, skip_reason, throwaway_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with throwaway_cluster() as cluster:
        yield cluster
