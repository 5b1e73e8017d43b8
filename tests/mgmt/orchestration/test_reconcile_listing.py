"""The reconcile loop asks each host which appliances it runs: a router its host does
not list misses the check without a look at its agent (which would wait out the
status timeout); a host whose listing fails or is empty decides nothing."""

from __future__ import annotations

import pytest
from orchestration_rows import routers_in_a_zone

from mgmt.orchestration import health, reconcile
from mgmt.orchestration.hosts.driver import HostHealth
from mgmt.orchestration.orchestrator import Orchestrator


class ListingHost:
    """A healthy host driver that lists (``listing`` None: the listing fails)."""

    def __init__(self, listing: set[str] | None):
        self.listing = listing

    async def health(self) -> HostHealth:
        return HostHealth(True)

    async def running(self) -> set[str]:
        if self.listing is None:
            raise OSError("host unreachable")
        return set(self.listing)


@pytest.fixture
async def two_on_a_host(db, tmp_path):
    rows = await routers_in_a_zone(db, tmp_path, 2, on_a_host=True)
    yield Orchestrator(db, tmp_path, "test-server"), rows.host_id, rows.router_ids


def _answering(monkeypatch, looked: list[int]):
    """Every agent that is asked answers, converged; the ids asked are recorded."""

    async def look(orch, router_id):
        looked.append(router_id)
        return health.Status(True, generation=0, document_hash=None, converged=True)

    monkeypatch.setattr(reconcile.health, "look", look)


async def test_a_router_its_host_does_not_list_misses_without_a_look(two_on_a_host, monkeypatch):
    orch, host_id, ids = two_on_a_host
    orch._drivers[host_id] = ListingHost({"r-0-VM", "i-2-3-VM"})  # r-1-VM is gone
    looked: list[int] = []
    _answering(monkeypatch, looked)
    loop = reconcile.Reconciler(orch)
    await loop.pass_once()
    assert looked == [ids[0]] and loop.failures == {ids[1]: 1}


@pytest.mark.parametrize("listing", [None, set()], ids=["listing fails", "empty listing"])
async def test_a_host_that_cannot_list_decides_nothing(two_on_a_host, monkeypatch, listing):
    orch, host_id, ids = two_on_a_host
    orch._drivers[host_id] = ListingHost(listing)
    looked: list[int] = []
    _answering(monkeypatch, looked)
    loop = reconcile.Reconciler(orch)
    await loop.pass_once()
    assert sorted(looked) == ids and loop.failures == {}
