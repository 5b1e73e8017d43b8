"""The throwaway PostgreSQL harness: finding the binaries, and what to say without them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgmt.db import testing_pg
from mgmt.db.testing_pg import PgCluster


def test_without_binaries_the_reason_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(testing_pg, "find_bindir", lambda: None)
    reason = testing_pg.skip_reason()
    assert reason is not None and "'postgresql'" in reason
    with pytest.raises(RuntimeError, match="install the Debian package"):
        testing_pg.start_cluster()


def test_bindir_from_the_environment_must_hold_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in testing_pg.BINARIES:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("SKIFF_PG_BINDIR", str(tmp_path))
    assert testing_pg.find_bindir() == tmp_path
    (tmp_path / "initdb").unlink()
    assert testing_pg.find_bindir() != tmp_path


def test_url_is_unix_socket_only(tmp_path: Path) -> None:
    cluster = PgCluster(base=tmp_path, bindir=tmp_path, run_as=None)
    assert cluster.url() == f"postgresql+asyncpg://skiff@/skiff?host={tmp_path}/sock"


def test_the_cluster_listens_on_its_socket_only(pg_cluster: PgCluster) -> None:
    assert (pg_cluster.socketdir / ".s.PGSQL.5432").is_socket()
    conf = (pg_cluster.datadir / "postmaster.opts").read_text()
    assert "listen_addresses=" in conf
