"""Fetching one URL into a Sink: resume after a broken connection, a size limit.

After a failure the next request asks for ``Range: bytes=<received>-`` with
``If-Range`` set to the validator of the first answer (a strong ETag, else
Last-Modified). A ``206`` that continues exactly where the file stopped and names
the same validator is appended; a ``200`` means the server ignored Range or the
file changed, so the sink starts again from byte 0 with that answer's body. Only
failures that made no progress count against ``retries``; each waits a back-off
that doubles. 4xx answers other than 408 and 429 are final at once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import aiohttp
from yarl import URL

from appliances.storage.sink import Sink

CHUNK = 4 << 20
DEFAULT_RETRIES = 5
#: Hard cap on requests for one download, progress or not (a server cutting every MiB).
MAX_REQUESTS = 100
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(RuntimeError):
    """The download failed for good; the message is the item's error text."""


class _Retry(Exception):
    pass


@dataclass
class Progress:
    bytes: int = 0
    total: int | None = None
    requests: int = 0
    resumed: int = 0  # requests that continued with Range
    restarts: int = 0  # times the file started again from byte 0

    @property
    def percent(self) -> int:
        if not self.total:
            return 0
        return min(100, self.bytes * 100 // self.total)


@dataclass(frozen=True)
class _Validator:
    etag: str | None
    last_modified: str | None

    @classmethod
    def of(cls, resp: aiohttp.ClientResponse) -> _Validator:
        etag = resp.headers.get("ETag")
        return cls(
            etag if etag and not etag.startswith("W/") else None, resp.headers.get("Last-Modified")
        )

    @property
    def if_range(self) -> str | None:
        return self.etag or self.last_modified

    def same(self, other: _Validator) -> bool:
        if self.etag and other.etag:
            return self.etag == other.etag
        if self.last_modified and other.last_modified:
            return self.last_modified == other.last_modified
        return self.if_range is None and other.if_range is None


def session(**kw) -> aiohttp.ClientSession:
    """A client session for downloads: bytes as sent (no transparent gunzip: Range
    counts the stored bytes), a read timeout instead of a total one."""
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=60)
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False, **kw)


async def fetch(
    client: aiohttp.ClientSession,
    url: str,
    sink: Sink,
    *,
    max_bytes: int,
    progress: Progress | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
) -> None:
    """Fill ``sink`` with the body at ``url``; raise DownloadError with a clear text."""
    progress = progress or Progress()
    first: list[_Validator] = []  # the validator of the first full answer, once seen
    failures = 0
    last = ""
    while True:
        if progress.requests >= MAX_REQUESTS:
            raise DownloadError(f"gave up after {progress.requests} requests (last: {last})")
        before = sink.size
        try:
            await _one_request(client, url, sink, first, max_bytes, progress)
            return
        except _Retry as exc:
            last = str(exc)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            last = _describe(exc)
        if sink.size > before:
            failures = 0
        else:
            failures += 1
            if failures > retries:
                raise DownloadError(f"download failed after {retries} retries: {last}")
        await asyncio.sleep(min(max_backoff, backoff * 2 ** max(failures - 1, 0)))


async def _one_request(
    client: aiohttp.ClientSession,
    url: str,
    sink: Sink,
    first: list[_Validator],
    max_bytes: int,
    progress: Progress,
) -> None:
    offset = sink.size
    validator = first[0] if first else None
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator is not None and validator.if_range:
            headers["If-Range"] = validator.if_range
    progress.requests += 1
    async with client.get(url, headers=headers) as resp:
        seen = _Validator.of(resp)
        if resp.status == 206 and offset:
            start, total = _content_range(resp)
            if start != offset or (validator is not None and not validator.same(seen)):
                await _restart(sink, progress)
                raise _Retry("the server answered a different range or file; starting again")
            progress.resumed += 1
        elif resp.status == 200:
            if offset:
                await _restart(sink, progress)  # Range ignored, or the file changed
            total = resp.content_length
            first[:] = [seen]
        elif resp.status == 416:
            await _restart(sink, progress)
            raise _Retry("the server refused the range; starting again")
        elif resp.status in _RETRYABLE_STATUS:
            raise _Retry(f"HTTP {resp.status} {resp.reason}")
        else:
            raise DownloadError(f"HTTP {resp.status} {resp.reason} from {_safe(url)}")
        if total is not None:
            if total > max_bytes:
                raise DownloadError(f"the file is {total} bytes, over the limit of {max_bytes}")
            progress.total = total
            if not sink.size:
                sink.preallocate(total)
        async for chunk in resp.content.iter_chunked(CHUNK):
            if sink.size + len(chunk) > max_bytes:
                raise DownloadError(f"the download passed the limit of {max_bytes} bytes")
            await sink.write(chunk)
            progress.bytes = sink.size
        if total is not None and sink.size != total:
            raise _Retry(f"the connection ended at byte {sink.size} of {total}")


def _content_range(resp: aiohttp.ClientResponse) -> tuple[int, int | None]:
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if m is None:
        return -1, None
    total = m.group(3)
    return int(m.group(1)), (None if total == "*" else int(total))


async def _restart(sink: Sink, progress: Progress) -> None:
    await sink.reset()
    progress.bytes = 0
    progress.restarts += 1


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _safe(url: str) -> str:
    """The URL without credentials or query (error texts end up in the UI)."""
    try:
        u = URL(url)
    except ValueError:
        return "the URL"
    return str(u.with_user(None).with_password(None).with_query(None))
