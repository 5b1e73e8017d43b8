"""The download engine against a loopback server that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import os

import pytest

from appliances.storage import download
from appliances.storage.checksum import parse_checksum
from appliances.storage.download import DownloadError, Progress
from appliances.storage.sink import Sink
from tests.storage import fileserver

SIZE = 3 * (1 << 20) + 12345


@pytest.fixture
async def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob").write_bytes(os.urandom(SIZE))
    srv, runner, port = await fileserver.start(root)
    srv.base = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


async def _fetch(server, tmp_path, path, *, max_bytes=1 << 30, retries=3):
    body = (server.root / "blob").read_bytes()
    checksum = parse_checksum(hashlib.sha256(body).hexdigest())
    sink = Sink(tmp_path / "out.part", checksum)
    progress = Progress()
    async with download.session() as client:
        try:
            await download.fetch(
                client,
                f"{server.base}/{path}",
                sink,
                max_bytes=max_bytes,
                progress=progress,
                retries=retries,
                backoff=0.01,
            )
        except BaseException:
            sink.abort()
            raise
    digest = await sink.finish()
    return body, digest, progress, sink


async def test_whole_file_hashed_while_written(server, tmp_path):
    body, digest, progress, sink = await _fetch(server, tmp_path, "blob")
    assert sink.path.read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()
    assert (progress.bytes, progress.total, progress.percent) == (SIZE, SIZE, 100)
    assert progress.requests == 1


async def test_broken_connection_resumes_with_range(server, tmp_path):
    body, digest, progress, sink = await _fetch(server, tmp_path, "blob?cut=once")
    assert sink.path.read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()
    assert (progress.requests, progress.resumed, progress.restarts) == (2, 1, 0)
    first, second = server.requests
    assert first[1] is None
    offset = int(second[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset < SIZE  # it asked only for what was missing


async def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    body, digest, progress, sink = await _fetch(server, tmp_path, "blob?cut=once&range=ignore")
    assert sink.path.read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()
    assert (progress.requests, progress.resumed, progress.restarts) == (2, 0, 1)


async def test_changed_validator_restarts_from_zero(server, tmp_path):
    # If-Range carries the first ETag; the server's differs, so it sends the whole file.
    body, digest, progress, sink = await _fetch(server, tmp_path, "blob?cut=once&etag=rotate")
    assert digest == hashlib.sha256(body).hexdigest()
    assert progress.restarts == 1 and progress.resumed == 0


async def test_missing_file_fails_at_once(server, tmp_path):
    sink = Sink(tmp_path / "out.part", None)
    async with download.session() as client:
        with pytest.raises(DownloadError, match="HTTP 404"):
            await download.fetch(
                client, f"{server.base}/nothing?secret=1", sink, max_bytes=1 << 30, backoff=0.01
            )
    sink.abort()
    assert len(server.requests) == 1  # no retry
    assert not sink.path.exists()


async def test_size_limit_from_content_length(server, tmp_path):
    with pytest.raises(DownloadError, match=f"the file is {SIZE} bytes, over the limit"):
        await _fetch(server, tmp_path, "blob", max_bytes=SIZE - 1)


async def test_unreachable_server_gives_up_after_the_retries(tmp_path):
    sink = Sink(tmp_path / "out.part", None)
    progress = Progress()
    async with download.session() as client:
        with pytest.raises(DownloadError, match="after 2 retries"):
            await download.fetch(
                client,
                "http://127.0.0.1:9/x",
                sink,
                max_bytes=1 << 20,
                progress=progress,
                retries=2,
                backoff=0.01,
            )
    sink.abort()
    assert progress.requests == 3


async def test_reset_and_preallocation_leave_exact_bytes(tmp_path):
    sink = Sink(tmp_path / "x.part", None)
    sink.preallocate(10 << 20)
    await sink.write(b"a" * 1000)
    await sink.reset()
    await sink.write(b"b" * 10)
    digest = await sink.finish()
    assert (tmp_path / "x.part").read_bytes() == b"b" * 10
    assert digest == hashlib.sha256(b"b" * 10).hexdigest()


async def test_small_pieces_are_gathered_in_order(tmp_path):
    pieces = [os.urandom(10_000 + k) for k in range(1_000)]  # about 10 MB, uneven sizes
    sink = Sink(tmp_path / "x.part", None)
    for piece in pieces:
        await sink.write(piece)
    digest = await sink.finish()
    body = b"".join(pieces)
    assert (tmp_path / "x.part").read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()
