"""A temp file filled from a stream: hashed and written as the bytes arrive.

The event loop only receives; the bytes go, in batches of about 4 MiB, to two
single-thread pools, one hashing and one writing (``pwrite`` at the batch's
offset). hashlib and ``os.pwrite`` release the GIL, so receiving, hashing and
writing overlap on two cores, and no byte is read twice: the digest is ready when
the last write is. Batching matters: the socket hands over 256 KiB at a time, and
a thread hand-off per piece cost more than joining them. When the length is known
the file is preallocated with ``fallocate``, so a full disk fails before the
transfer and the file stays contiguous.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliances.storage.checksum import Checksum, new_hasher

#: Bytes gathered before a hand-off to the pools.
BATCH = 4 << 20
#: Batches handed to the pools and not yet done, per pool (memory: about this x BATCH).
MAX_INFLIGHT = 4


class SinkError(OSError):
    """Writing the temp file failed (disk full, I/O error)."""


def _load_fallocate():
    try:
        func = ctypes.CDLL(None, use_errno=True).fallocate
    except (AttributeError, OSError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_FALLOCATE = _load_fallocate()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


class Sink:
    """One temp file being filled. ``size`` counts the bytes accepted so far."""

    def __init__(self, path: Path, checksum: Checksum | None):
        self.path = Path(path)
        self.checksum = checksum
        self.hasher = new_hasher(checksum)
        self.size = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._allocated = 0
        self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="sink-hash")
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="sink-write")
        self._inflight: deque[asyncio.Future] = deque()
        self._gathered: list[bytes] = []
        self._gathered_bytes = 0
        self._closed = False

    async def write(self, chunk: bytes) -> None:
        """Accept ``chunk`` (at offset ``size``); waits only when the pools lag behind."""
        if not chunk:
            return
        self.size += len(chunk)
        self._gathered.append(chunk)
        self._gathered_bytes += len(chunk)
        if self._gathered_bytes >= BATCH:
            self._hand_off()
            while len(self._inflight) > 2 * MAX_INFLIGHT:
                await self._next()

    def _hand_off(self) -> None:
        if not self._gathered:
            return
        data = self._gathered[0] if len(self._gathered) == 1 else b"".join(self._gathered)
        offset = self.size - len(data)
        self._gathered, self._gathered_bytes = [], 0
        loop = asyncio.get_running_loop()
        self._inflight.append(loop.run_in_executor(self._hash_pool, self.hasher.update, data))
        self._inflight.append(
            loop.run_in_executor(self._write_pool, _pwrite_all, self._fd, data, offset)
        )

    def preallocate(self, total: int) -> None:
        """Reserve ``total`` bytes (ignored where the file system cannot); a full disk
        fails here, before any byte is fetched."""
        if _FALLOCATE is None or total <= self._allocated:
            return
        if _FALLOCATE(self._fd, 0, 0, total) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                raise SinkError(err, f"no space for {total} bytes in the image store")
            return  # EOPNOTSUPP and friends: write without it
        self._allocated = total

    async def reset(self) -> None:
        """Start again from byte 0 (the server ignored Range or the file changed)."""
        self._gathered, self._gathered_bytes = [], 0
        await self._drain()
        os.ftruncate(self._fd, 0)
        self.size, self._allocated = 0, 0
        self.hasher = new_hasher(self.checksum)

    async def finish(self) -> str:
        """Wait for every write, trim a preallocation, fsync, close; the hex digest."""
        await self._drain()
        if self._allocated > self.size:
            os.ftruncate(self._fd, self.size)
        await asyncio.get_running_loop().run_in_executor(self._write_pool, os.fsync, self._fd)
        self._close()
        return self.hasher.hexdigest()

    def abort(self) -> None:
        """Drop the temp file. Synchronous on purpose: safe in a ``finally`` of a cancelled
        task; waits for the at most one chunk each pool is busy with, then closes."""
        self._close()
        self.path.unlink(missing_ok=True)

    async def _next(self) -> None:
        fut = self._inflight.popleft()
        try:
            await fut
        except OSError as exc:
            raise SinkError(exc.errno, f"writing {self.path.name}: {exc.strerror}") from None

    async def _drain(self) -> None:
        self._hand_off()
        while self._inflight:
            await self._next()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fut in self._inflight:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: the first failure was already raised
            fut.cancel()
        self._inflight.clear()
        self._hash_pool.shutdown(wait=True, cancel_futures=True)
        self._write_pool.shutdown(wait=True, cancel_futures=True)
        os.close(self._fd)
