"""Rendering an :class:`NftPlan` to nft syntax: the whole ruleset or an element delta."""

from __future__ import annotations

import re

from appliances.common.render import Escaped, RenderError, make_environment
from appliances.router.nft_model import NftPlan

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _quote(value: str) -> Escaped:
    """nft string literal (interface names, comments): double-quoted, safe set only."""
    if not _NAME.fullmatch(value):
        raise RenderError(f"refusing to quote {value[:80]!r} for nft")
    return Escaped(f'"{value}"')


_env = make_environment(
    "appliances.router", safe_chars=r"A-Za-z0-9 ._:/,-", filters={"q": _quote}
)


def render_ruleset(plan: NftPlan, *, with_elements: bool = True) -> str:
    """The full ruleset file. Without elements it is the ruleset's "shape":
    two plans with the same shape differ only in set contents."""
    if with_elements:
        return _env.get_template("ruleset.nft.j2").render(**plan.context, elements=plan.elements)
    context = {**plan.context, "generation": "any"}
    empty = {name: {} for name in plan.elements}
    return _env.get_template("ruleset.nft.j2").render(**context, elements=empty)


def render_delta(old: NftPlan, new: NftPlan) -> str | None:
    """Element deletions and additions turning ``old`` into ``new``, or None if equal."""
    deletes: dict[str, list[str]] = {}
    adds: dict[str, dict[str, str | None]] = {}
    for name, new_items in new.elements.items():
        old_items = old.elements.get(name, {})
        gone = [k for k, v in old_items.items() if k not in new_items or new_items[k] != v]
        fresh = {k: v for k, v in new_items.items() if k not in old_items or old_items[k] != v}
        if gone:
            deletes[name] = gone
        if fresh:
            adds[name] = fresh
    if not deletes and not adds:
        return None
    return _env.get_template("delta.nft.j2").render(
        **new.context, deletes=deletes, adds=adds
    )
