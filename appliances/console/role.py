"""The console proxy role: noVNC and a token-checked websocket bridge to VNC servers."""

from __future__ import annotations

from appliances.agent.service import AgentContext, Service
from appliances.console.document import ConsoleDocument, ConsoleParser
from appliances.console.service import ConsoleProxyService


class ConsoleRole:
    name = "console"
    model = ConsoleDocument

    def parser(self) -> ConsoleParser:
        return ConsoleParser()

    def services(self, ctx: AgentContext) -> list[Service]:
        return [ConsoleProxyService(ctx)]
