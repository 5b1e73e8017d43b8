"""A tiny HTTP/1.0-style server that tells the client who it reached and from where.

Every GET is answered with ``<name> <client-ip>:<client-port>\\n`` so tests see which
server they reached and which source address arrived (NAT tests). ``GET /stream`` keeps
the connection open and writes one such line per second, numbered, until the client
closes (to check that an established flow survives a config apply).

For load-balancer tests: an ``X-Forwarded-For`` header is echoed as `` xff=<value>``;
``--accept-proxy`` expects a PROXY protocol v1 line first and reports the client it
names; ``--cookie NAME`` sets an application session cookie ``NAME=<name>-<n>`` on
answers to requests that do not carry one.

    python -m appliances.lab.httpd --name g1 --port 80 [--bind ADDR] [--accept-proxy]
        [--cookie NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys

MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 10.0


def _response(status: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nServer: skiff-lab\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


class Server:
    def __init__(self, name: str, interval: float = 1.0, *, accept_proxy: bool = False,
                 cookie: str | None = None):
        self.name = name
        self.interval = interval
        self.accept_proxy = accept_proxy
        self.cookie = cookie
        self.sessions = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            if self.accept_proxy:
                peer = _proxy_source(await asyncio.wait_for(reader.readline(), READ_TIMEOUT))
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, ValueError):
            writer.close()
            return
        who = f"{self.name} {peer[0]}:{peer[1]}"
        head = request.decode("latin-1").split("\r\n")
        try:
            method, target, *_ = head[0].split(" ")
        except ValueError:
            method, target = "", ""
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head[1:] if ":" in line)}
        extra = ""
        if "x-forwarded-for" in headers:
            who += f" xff={headers['x-forwarded-for']}"
        if self.cookie and f"{self.cookie}=" not in headers.get("cookie", ""):
            self.sessions += 1
            extra = f"Set-Cookie: {self.cookie}={self.name}-{self.sessions}\r\n"
        try:
            if method not in ("GET", "HEAD"):
                writer.write(_response("405 Method Not Allowed", b"only GET\n", "Allow: GET\r\n"))
            elif target.split("?", 1)[0] == "/stream":
                await self._stream(reader, writer, who)
            else:
                response = _response("200 OK", f"{who}\n".encode(), extra)
                if method == "HEAD":
                    response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                writer.write(response)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      who: str) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nServer: skiff-lab\r\nContent-Type: text/plain\r\n"
                     b"Connection: close\r\n\r\n")
        closed = asyncio.ensure_future(reader.read())  # EOF or error: the client is gone
        seq = 0
        try:
            while not closed.done():
                writer.write(f"{who} {seq}\n".encode())
                await writer.drain()
                seq += 1
                await asyncio.wait([closed], timeout=self.interval)
        finally:
            closed.cancel()


def _proxy_source(line: bytes) -> tuple[str, int]:
    """The client named by a PROXY protocol v1 line ("PROXY TCP4 src dst sport dport")."""
    parts = line.decode("latin-1").split()
    if len(parts) != 6 or parts[0] != "PROXY":
        raise ValueError(f"not a PROXY protocol line: {line[:60]!r}")
    return parts[2], int(parts[4])


async def start(name: str, port: int, bind: str | None = None, interval: float = 1.0, *,
                accept_proxy: bool = False, cookie: str | None = None) -> asyncio.Server:
    """Start serving (port 0 picks a free port; see ``server.sockets``)."""
    server = Server(name, interval, accept_proxy=accept_proxy, cookie=cookie)
    return await asyncio.start_server(server.handle, host=bind, port=port,
                                      backlog=4096, reuse_address=True,
                                      limit=MAX_HEADER_BYTES)


async def serve(name: str, port: int, bind: str | None = None, **options) -> None:
    server = await start(name, port, bind, **options)
    async with server:
        await server.serve_forever()


def _raise_fd_limit() -> None:
    """Many concurrent connections need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliances.lab.httpd",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="name put in every answer")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--bind", default=None, help="address to listen on (default: all)")
    parser.add_argument("--accept-proxy", action="store_true",
                        help="expect a PROXY protocol v1 line before each request")
    parser.add_argument("--cookie", metavar="NAME", default=None,
                        help="set an application session cookie NAME on new sessions")
    args = parser.parse_args(argv)
    _raise_fd_limit()
    print(f"httpd {args.name}: listening on {args.bind or '*'}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.name, args.port, args.bind, accept_proxy=args.accept_proxy,
                          cookie=args.cookie))
    return 0


if __name__ == "__main__":
    sys.exit(main())
