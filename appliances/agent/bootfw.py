"""The image's boot firewall (table inet skiff_boot, from /etc/nftables.conf and `skiff
boot`) guards the appliance until its role's own ruleset is in place; the agent removes
it after the first document that applied. Outside the image (the lab) it is disabled."""

from __future__ import annotations

import logging

from appliances.common.proc import run

log = logging.getLogger("skiff.agent")

TABLE = ("inet", "skiff_boot")


class BootFirewall:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    async def release(self) -> None:
        """Delete the boot table once (later calls do nothing)."""
        if not self.enabled:
            return
        self.enabled = False
        result = await run(["nft", "delete", "table", *TABLE])
        if result.ok:
            log.info("the role's ruleset is in place: boot firewall removed")
        elif "No such file" not in result.output:
            log.warning("could not remove the boot firewall: %s", result.output)
