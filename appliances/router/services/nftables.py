"""NAT and firewall: the router's own nftables table, changed in one transaction.

The check step is the transaction itself. ``nft -f`` validates the whole batch
in the kernel and commits all of it or none of it, so a separate ``nft -c``
pass would double the cost of every apply without adding safety: a refused
batch leaves the running ruleset exactly as it was. (``skiff router check``
still runs ``nft -c`` for a dry run.) This service commits first among the
daemons' services, so its failure touches nothing else.

When only set and map contents change (the common case: a forward or firewall
rule added or removed), only the changed elements are sent, so the cost of a
change grows with the change and not with the size of the ruleset.
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
        self._applied: nft_model.NftPlan | None = None
        self._applied_shape: str | None = None

    async def prepare(self, doc: RouterDocument) -> Change:
        plan = nft_model.plan(doc, self.ctx.agent_port)
        shape = nft_render.render_ruleset(plan, with_elements=False)
        full = nft_render.render_ruleset(plan)
        data = {"plan": plan, "shape": shape, "full": full, "delta": None}
        if self._applied is not None and shape == self._applied_shape:
            delta = nft_render.render_delta(self._applied, plan)
            if delta is None:
                return Change(self.name, False, "unchanged", data)
            data["delta"] = delta
            count = delta.count("\n") - 1
            return Change(self.name, True, f"{count} set update(s)", data)
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
        result = await self._nft_file(self.dir / "ruleset.nft.new", data["full"])
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
        atomic_write(self.dir / "ruleset.nft", data["full"])
        self._applied, self._applied_shape = data["plan"], data["shape"]

    async def withdraw(self) -> None:
        result = await run([NFT, "delete", "table", nft_model.FAMILY, nft_model.TABLE])
        if not result.ok and "No such file" not in result.output:
            raise ApplyError(self.name, "could not remove the table", result.output)
        self._applied = self._applied_shape = None


async def check_ruleset(path: str) -> tuple[bool, str]:
    """Dry run of a rendered ruleset with ``nft -c`` (changes nothing)."""
    result = await run([NFT, "-c", "-f", path])
    return result.ok, result.output
