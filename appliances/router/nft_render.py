"""Rendering nftables state to nft syntax: the whole ruleset, or an element delta."""

from __future__ import annotations

import re

from appliances.common.render import Escaped, RenderError, make_environment
from appliances.router.nft_model import SETS, NftPlan

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _quote(value: str) -> Escaped:
    """nft string literal (interface names, comments): double-quoted, safe set only."""
    if not _NAME.fullmatch(value):
        raise RenderError(f"refusing to quote {value[:80]!r} for nft")
    return Escaped(f'"{value}"')


_env = make_environment(
    "appliances.router", safe_chars=r"A-Za-z0-9 ._:/,-", filters={"q": _quote}
)


def render_ruleset(plan: NftPlan) -> str:
    """The full ruleset file: one table, replaced in one transaction."""
    return _env.get_template("ruleset.nft.j2").render(**plan.context, elements=plan.elements)


def render_shape(shape_context: dict) -> str:
    """The ruleset without elements or generation: two documents with the same
    shape differ only in set contents, so an element delta takes one to the other."""
    empty = {name: {} for name in SETS}
    return _env.get_template("ruleset.nft.j2").render(
        **shape_context, generation="any", elements=empty
    )


def render_delta(
    deletes: dict[str, list[str]],
    adds: dict[str, dict[str, str | None]],
    context: dict,
) -> str | None:
    """Element deletions then additions in one file, or None when there are none."""
    if not deletes and not adds:
        return None
    return _env.get_template("delta.nft.j2").render(**context, deletes=deletes, adds=adds)
