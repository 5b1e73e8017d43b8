"""A small HTTP file server for download tests, with the faults the tests need.

Serves the files of one folder at ``/<name>`` with ETag, Last-Modified and
``Range: bytes=N-``. Query options make it misbehave:

* ``cut=once``: the first request for the URL sends half the body, then drops the
  connection (later requests are served whole, Range honoured);
* ``range=ignore``: Range is ignored (always 200 with the whole file);
* ``etag=rotate``: the validator changes on every request (the file "changed").

Runs in-process (``start``) or as a script in a lab namespace::

    python tests/storage/fileserver.py --dir D --listen 203.0.113.1 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

from aiohttp import web

_RANGE = re.compile(r"^bytes=(\d+)-$")


class FileServer:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str | None]] = []  # (path_qs, Range header)
        self._cut: set[str] = set()
        self._rotations = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.serve)
        return app

    async def serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.root / name
        self.requests.append((request.path_qs, request.headers.get("Range")))
        if "/" in name or not path.is_file():
            return web.Response(status=404, text="not found")
        q = request.query
        data = path.read_bytes()
        etag = f'"{len(data)}-{path.stat().st_mtime_ns}"'
        if q.get("etag") == "rotate":
            self._rotations += 1
            etag = f'"{self._rotations}"'
        headers = {
            "ETag": etag,
            "Last-Modified": "Tue, 01 Jul 2025 10:00:00 GMT",
            "Accept-Ranges": "bytes",
        }
        start, status = 0, 200
        m = _RANGE.match(request.headers.get("Range", ""))
        if_range = request.headers.get("If-Range")
        if m and q.get("range") != "ignore" and (if_range is None or if_range == etag):
            start, status = int(m.group(1)), 206
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        key = request.path_qs
        if q.get("cut") == "once" and key not in self._cut:
            self._cut.add(key)
            await resp.write(body[: len(body) // 2])
            await asyncio.sleep(0.05)  # let the half leave before the connection drops
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp


async def start(
    root: Path, host: str = "127.0.0.1", port: int = 0
) -> tuple[FileServer, web.AppRunner, int]:
    server = FileServer(root)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return server, runner, bound


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(
        FileServer(args.dir).app(), host=args.listen, port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
