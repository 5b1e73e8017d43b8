"""SQLAlchemy's aiosqlite dialect with one thread hop per statement.

aiosqlite runs a connection's calls on its own thread, and each call is a
round trip: queue, wake the thread, wake the event loop. The stock adapter
makes four per statement (open a cursor, execute, fetch, close) and one more
for the rollback that ends every read-only session; on this machine a hop
costs about 0.1 ms, more than a small query itself. Here a statement is one
hop (execute, fetch and close run together), SELECTs go to one shared reader
thread (READ_THREADS) or, when they have been cheap, run on the event loop
(ReadPlacement), and commit/rollback cost nothing when SQLite has no
transaction open. A connection is still used by one statement at a time (the
adapter's mutex), whichever thread runs it.

Registered as ``sqlite+skiff``; mgmt.db.engine uses it for every SQLite URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util.concurrency import await_

#: Threads that run SELECTs, for all connections of an engine. One, fed in arrival
#: order, works back to back while the event loop does the rest of each request
#: (its GIL-free sqlite3_step overlaps the loop's Python). More do not help on two
#: cores: each must win the GIL back from the loop to return its rows, and the
#: winner is not the thread that waited longest, so some requests starve (api_load,
#: two readers: a 500-row page's p99 about 300 ms; one: about 150 ms). WAL readers
#: never wait for locks, so one slow writer cannot hold the readers up; writes keep
#: to their connection's own aiosqlite thread, where a busy wait blocks nobody else.
READ_THREADS = 1

#: A SELECT that took less CPU than this last time runs on the event loop itself:
#: handing it to the reader thread and back (two GIL handovers while the loop is
#: busy) costs more than the query. api_load's listZones (three zones): about
#: 850 requests/s through the reader thread, about 1,350 inline.
INLINE_BELOW_S = 0.0002


class ReadPlacement:
    """Where each SELECT runs, learnt from its own cost (CPU time, by SQL text; a
    moving average, so a query that grows slow moves to the thread after one run).
    A query never seen before goes to the thread."""

    MAX_STATEMENTS = 4096

    def __init__(self) -> None:
        self._cost: dict[str, float] = {}

    def inline(self, sql: str) -> bool:
        return self._cost.get(sql, INLINE_BELOW_S) < INLINE_BELOW_S

    def learn(self, sql: str, seconds: float) -> None:
        if len(self._cost) >= self.MAX_STATEMENTS:
            self._cost.clear()
        before = self._cost.get(sql)
        self._cost[sql] = seconds if before is None else 0.7 * before + 0.3 * seconds


class _Outcome:
    """What a statement left on its (already closed) sqlite3 cursor."""

    __slots__ = ("description", "rowcount", "lastrowid", "arraysize")

    def __init__(self) -> None:
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def close(self) -> None:
        """Nothing to close: the thread closed the real cursor."""


async def _to_the_end(future: asyncio.Future) -> Any:
    """A read on the reader thread, awaited so that a cancelled caller still waits for
    it to end before the cancellation goes on: until then the thread uses the
    connection, and a connection closed under it (a cancelled task's session, at
    shutdown) crashes the interpreter (SIGSEGV in sqlite3)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False  # close() is _Outcome.close: no hop

    def _make_new_cursor(self, connection: Any) -> Any:
        return _Outcome()

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        outcome: _Outcome = self._cursor
        aio = self._connection

        def run() -> list | None:
            cursor = aio._conn.cursor()
            try:
                cursor.execute(operation, () if parameters is None else parameters)
                outcome.description = cursor.description
                outcome.rowcount, outcome.lastrowid = cursor.rowcount, cursor.lastrowid
                return cursor.fetchall() if cursor.description else None
            finally:
                cursor.close()

        def read() -> list | None:
            started = time.thread_time()
            try:
                return run()
            finally:
                dbapi.placement.learn(operation, time.thread_time() - started)

        dbapi: OneHopDbapi = self._adapt_connection.dbapi
        async with self._adapt_connection._execute_mutex:
            if operation.lstrip()[:6].upper() != "SELECT":
                rows = await aio._execute(run)
            elif dbapi.placement.inline(operation):
                rows = read()
            else:
                rows = await _to_the_end(
                    asyncio.get_running_loop().run_in_executor(dbapi.readers, read))
        if rows is not None:
            self._rows.extend(rows)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        outcome: _Outcome = self._cursor
        aio = self._connection

        def run() -> None:
            cursor = aio._conn.cursor()
            try:
                cursor.executemany(operation, seq_of_parameters)
                outcome.rowcount, outcome.lastrowid = cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        async with self._adapt_connection._execute_mutex:
            await aio._execute(run)


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor

    def rollback(self) -> None:
        # in_transaction is sqlite3_get_autocommit(): safe to read from this thread.
        if self._connection._connection and self._connection.in_transaction:
            super().rollback()

    def commit(self) -> None:
        if self._connection._connection and self._connection.in_transaction:
            super().commit()


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.placement = ReadPlacement()
        #: Reads run on these threads, in arrival order, back to back.
        self.readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sqlite-read")

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        kw["check_same_thread"] = False  # SELECTs run on the reader thread
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True
        return OneHopConnection(self, await_(connection))


class SkiffSQLiteDialect(SQLiteDialect_aiosqlite):
    driver = "skiff"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> OneHopDbapi:
        return OneHopDbapi(__import__("aiosqlite"), __import__("sqlite3"))


registry.register("sqlite.skiff", __name__, "SkiffSQLiteDialect")
