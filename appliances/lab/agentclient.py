"""A small mutual-TLS client for the appliance agent's HTTP API."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from appliances.lab.pki import PkiPaths, client_ssl_context


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or the text when it is not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class AgentError(RuntimeError):
    def __init__(self, message: str, reply: Reply | None = None):
        self.reply = reply
        super().__init__(message)


class AgentClient:
    """Talks to one agent; verifies that its certificate names ``appliance_id``."""

    def __init__(self, url: str, appliance_id: str, pki: PkiPaths | ssl.SSLContext,
                 timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.appliance_id = appliance_id
        self.ssl = pki if isinstance(pki, ssl.SSLContext) else client_ssl_context(pki)
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=5)

    async def request(self, method: str, path: str, data: Any = None,
                      timeout: float | None = None) -> Reply:
        kwargs: dict[str, Any] = {"ssl": self.ssl, "server_hostname": self.appliance_id}
        if isinstance(data, bytes):
            kwargs["data"] = data
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif data is not None:
            kwargs["json"] = data
        tmo = aiohttp.ClientTimeout(total=timeout, connect=5) if timeout else self.timeout
        async with (
            aiohttp.ClientSession(timeout=tmo) as session,
            session.request(method, f"{self.url}{path}", **kwargs) as resp,
        ):
            text = await resp.text()
            try:
                body: Any = json.loads(text) if text else None
            except ValueError:
                body = text
            return Reply(resp.status, body)

    async def health(self, timeout: float | None = None) -> Reply:
        return await self.request("GET", "/v1/health", timeout=timeout)

    async def put_config(self, document: Any) -> Reply:
        """PUT a document (model or plain JSON data); returns the reply whatever its status."""
        if hasattr(document, "model_dump"):
            document = document.model_dump(mode="json")
        return await self.request("PUT", "/v1/config", document)

    async def put_body(self, body: bytes) -> Reply:
        """PUT a document already serialised: the agent's document_hash is sha256(body)."""
        return await self.request("PUT", "/v1/config", body)

    async def status(self, timeout: float | None = None) -> Reply:
        return await self.request("GET", "/v1/status", timeout=timeout)

    async def apply(self, document: Any) -> Reply:
        """PUT a document and raise AgentError unless the agent applied it."""
        reply = await self.put_config(document)
        if not reply.ok:
            raise AgentError(f"agent refused the document (HTTP {reply.status}): "
                             f"{json.dumps(reply.body)[:2000]}", reply)
        return reply

    async def wait_healthy(self, timeout: float, alive=lambda: True) -> Reply:
        """Poll /v1/health until it answers 200, ``alive()`` turns false, or timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "no answer"
        while loop.time() < deadline:
            if not alive():
                raise AgentError(f"the agent exited before it was healthy (last: {last})")
            try:
                reply = await self.health(timeout=3)
                if reply.status == 200:
                    return reply
                last = f"HTTP {reply.status}: {reply.body}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.25)
        raise AgentError(f"the agent did not become healthy within {timeout:.0f} s "
                         f"(last: {last})")
