"""NAT and firewall: the router's own nftables table, changed in one transaction.

The check step is the transaction itself. ``nft -f`` validates the whole batch
in the kernel and commits all of it or none of it, so a separate ``nft -c``
pass would double the cost of every apply without adding safety: a refused
batch leaves the running ruleset exactly as it was. (``skiff router check``
still runs ``nft -c`` for a dry run.) This service commits first among the
daemons' services, so its failure touches nothing else.

When only set and map contents change (the common case: a forward or firewall
rule added or removed), only the elements of the items that changed are sent,
so the cost of a change grows with the change and not with the size of the
ruleset. ``ruleset.nft`` in the state folder is the last whole ruleset sent and
``delta.nft`` the last element change; ``render_current`` gives today's whole.
"""

from __future__ import annotations

import logging

from appliances.agent.service import Change, Service
from appliances.common.errors import ApplyError
from appliances.common.files import atomic_write
from appliances.common.proc import run
from appliances.router import nft_model, nft_render
from appliances.router.document import RouterDocument

log = logging.getLogger(__name__)

NFT = "nft"


class NftablesService(Service):
    name = "nftables"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.dir = ctx.state_dir / "nftables"
        self._applied: RouterDocument | None = None
        self._applied_shape: str | None = None

    async def prepare(self, doc: RouterDocument) -> Change:
        shape_ctx = nft_model.shape_context(doc, self.ctx.agent_port)
        shape = nft_render.render_shape(shape_ctx)
        data = {"doc": doc, "shape": shape, "full": None, "delta": None}
        if self._applied is not None and shape == self._applied_shape:
            deletes, adds = nft_model.element_changes(self._applied, doc)
            context = {**shape_ctx, "generation": doc.generation}
            data["delta"] = nft_render.render_delta(deletes, adds, context)
            if data["delta"] is None:
                return Change(self.name, False, "unchanged", data)
            count = sum(map(len, deletes.values())) + sum(map(len, adds.values()))
            return Change(self.name, True, f"{count} element update(s)", data)
        data["full"] = nft_render.render_ruleset(nft_model.plan(doc, self.ctx.agent_port))
        return Change(self.name, True, "full ruleset", data)

    async def commit(self, change: Change) -> None:
        data = change.data
        if data["delta"] is not None:
            result = await self._nft_file(self.dir / "delta.nft", data["delta"])
            if result.ok:
                self._remember(data)
                return
            # The kernel is not what we last applied (changed behind our back?):
            # converge with the whole ruleset instead.
            log.warning("element update refused, applying the whole ruleset: %s", result.output)
            self.state.event("element update refused; re-applied the whole ruleset")
            data["full"] = nft_render.render_ruleset(
                nft_model.plan(data["doc"], self.ctx.agent_port)
            )
        result = await self._nft_file(self.dir / "ruleset.nft", data["full"])
        if not result.ok:
            failed = self.dir / "ruleset.nft.failed"
            atomic_write(failed, data["full"])
            raise ApplyError(
                self.name,
                f"nft refused the ruleset; the running ruleset is unchanged (kept {failed})",
                result.output,
            )
        self._remember(data)

    async def _nft_file(self, path, script: str):
        atomic_write(path, script)
        return await run([NFT, "-f", str(path)])

    def _remember(self, data: dict) -> None:
        self._applied, self._applied_shape = data["doc"], data["shape"]

    def render_current(self) -> str | None:
        """The whole ruleset of the applied document (for inspection)."""
        if self._applied is None:
            return None
        return nft_render.render_ruleset(nft_model.plan(self._applied, self.ctx.agent_port))

    async def withdraw(self) -> None:
        result = await run([NFT, "delete", "table", nft_model.FAMILY, nft_model.TABLE])
        if not result.ok and "No such file" not in result.output:
            raise ApplyError(self.name, "could not remove the table", result.output)
        self._applied = self._applied_shape = None


async def check_ruleset(path: str) -> tuple[bool, str]:
    """Dry run of a rendered ruleset with ``nft -c`` (changes nothing)."""
    result = await run([NFT, "-c", "-f", path])
    return result.ok, result.output
