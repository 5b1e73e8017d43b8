"""The lab's HTTP server: names itself and the client, many clients, /stream."""

from __future__ import annotations

import asyncio

import pytest

from appliances.lab import httpd


@pytest.fixture
async def server():
    srv = await httpd.start("g9", 0, "127.0.0.1", interval=0.05)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


async def _get(port: int, path: str = "/") -> tuple[bytes, tuple[str, int]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    local = writer.get_extra_info("sockname")
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data, local


async def test_answer_names_server_and_client(server):
    data, local = await _get(server)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert body == f"g9 {local[0]}:{local[1]}\n".encode()


async def test_many_concurrent_clients(server):
    results = await asyncio.gather(*(_get(server, f"/n{k}") for k in range(300)))
    for data, local in results:
        assert data.endswith(f"g9 {local[0]}:{local[1]}\n".encode())


async def test_rejects_other_methods(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"POST / HTTP/1.0\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.0 405")
    writer.close()


async def test_stream_until_client_closes(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    lines = [await asyncio.wait_for(reader.readline(), 2) for _ in range(3)]
    assert [line.split()[-1] for line in lines] == [b"0", b"1", b"2"]
    assert all(line.startswith(b"g9 127.0.0.1:") for line in lines)
    writer.close()
    await writer.wait_closed()
    # The server notices and still serves others.
    data, _ = await _get(server)
    assert b"200 OK" in data
