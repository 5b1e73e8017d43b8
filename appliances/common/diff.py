"""Finding what changed between two lists of immutable items, by identity.

The router's parser hands out the very same item objects for items that did
not change (see appliances/router/parse.py), so identity is both exact and the
cheapest possible comparison.
"""

from __future__ import annotations


def added_items(old: list, new: list) -> list:
    """Items of ``new`` that are not (by identity) items of ``old``."""
    if old is new:
        return []
    seen = {id(item) for item in old}
    return [item for item in new if id(item) not in seen]


def same_items(old: list, new: list) -> bool:
    """Both lists hold the very same objects in the same order."""
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))
