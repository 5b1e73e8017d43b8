"""A read on the SQLite reader thread outlives a cancelled caller: the caller must wait
for it before letting its session close the connection (else: SIGSEGV in sqlite3, seen
when the server closed the database under a cancelled reconcile pass)."""

from __future__ import annotations

import asyncio

import pytest

from mgmt.db.sqlite_driver import _to_the_end


async def test_a_cancelled_caller_waits_for_the_read_then_is_cancelled():
    read = asyncio.get_running_loop().create_future()  # the reader thread's work
    caller = asyncio.create_task(_to_the_end(read))
    await asyncio.sleep(0)
    caller.cancel()
    for _ in range(20):  # however long it takes: the read is not over
        await asyncio.sleep(0)
    assert not caller.done()
    caller.cancel()  # cancelled again meanwhile: still waits
    await asyncio.sleep(0)
    assert not caller.done()
    read.set_result([(1,)])
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_an_uncancelled_caller_gets_the_rows():
    read = asyncio.get_running_loop().create_future()
    read.set_result([(1,)])
    assert await _to_the_end(read) == [(1,)]
