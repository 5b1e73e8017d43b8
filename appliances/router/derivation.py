"""What a parsed document changed, relative to the document it was parsed against.

The parser knows which items it validated anew (everything else is the very
same object as before), so it records that here; verify and the nftables
delta then skip scanning 10,000-item lists to find out again. Consumers ask
:func:`changes`, which falls back to an identity diff whenever the record does
not apply (another base, or items were removed).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from appliances.common.diff import added_items


@dataclass(frozen=True)
class Derivation:
    base: Any  # the document this one was parsed against
    added: dict[str, list]  # section -> items validated anew, in document order
    nothing_removed: frozenset[str]  # sections where every base item is still there


_records: dict[int, Derivation] = {}


def record(doc: Any, derivation: Derivation) -> None:
    key = id(doc)
    _records[key] = derivation
    weakref.finalize(doc, _records.pop, key, None)


def changes(old_doc: Any, new_doc: Any, section: str, old: list, new: list) -> tuple[list, list]:
    """(added, removed) items of one section between two documents."""
    if old is new:
        return [], []
    known = _records.get(id(new_doc))
    if known is not None and known.base is old_doc and section in known.added:
        added = known.added[section]
        removed = [] if section in known.nothing_removed else added_items(new, old)
        return added, removed
    return added_items(old, new), added_items(new, old)
