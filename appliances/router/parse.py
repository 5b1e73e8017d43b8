"""Parsing router documents so that the work grows with the change.

The management server always sends the whole document, and a router with
10,000 forwards gets a 3 MB document for every one-rule change. Building
10,000 validated models again costs far more than the change itself, so the
parser remembers the raw JSON and the model of every item of the last accepted
document, by key, and reuses the model when the raw item is equal (a C-level
dict comparison). Reused items are the *same objects*, which lets verify, the
nftables delta and dnsmasq find what changed by identity.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from appliances.common.errors import DocumentError
from appliances.router import derivation, verify
from appliances.router.document import (
    DhcpHost,
    DnsRecord,
    IngressRule,
    PortForward,
    PublicIp,
    RouterDocument,
    StaticNat,
)

#: Top-level lists worth remembering item by item, with the raw field that
#: identifies an item (a key seen twice only means less reuse, never a wrong one).
MEMO_SECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "port_forwards": (PortForward, "id"),
    "ingress_rules": (IngressRule, "id"),
    "dhcp_hosts": (DhcpHost, "mac"),
    "dns_records": (DnsRecord, "name"),
    "public_ips": (PublicIp, "ip"),
    "static_nats": (StaticNat, "public_ip"),
}

_adapters = {name: TypeAdapter(model) for name, (model, _key) in MEMO_SECTIONS.items()}


class RouterParser:
    """Validates documents against the last accepted one. One per agent."""

    def __init__(self) -> None:
        self._memo: dict[str, dict[Any, tuple[dict, BaseModel]]] = {}
        # For recently parsed documents (by id), per section: the memo it was
        # parsed against, its new entries, and whether nothing was removed.
        self._notes: dict[int, dict[str, tuple[dict, list, bool]]] = {}
        self._retired: list[tuple] = []
        self._raw: dict = {}
        self.accepted: RouterDocument | None = None

    def parse(self, raw: Any) -> RouterDocument:
        """A valid document, or DocumentError naming every bad field."""
        doc = self._validate(raw)
        if self.accepted is not None and verify.still_valid(self.accepted, doc):
            return doc
        verify.check(doc)
        return doc

    def accept(self, raw: dict, doc: RouterDocument) -> None:
        """Remember ``doc`` (applied) and its raw items for the next parse."""
        memo = {}
        prev = self.accepted
        notes = self._notes.pop(id(doc), {})
        self._notes.clear()
        for section, (_model, key) in MEMO_SECTIONS.items():
            items = raw.get(section) or []
            if prev is not None and getattr(doc, section) is getattr(prev, section):
                memo[section] = self._memo[section]  # the very same items
                continue
            base, fresh, nothing_removed = notes.get(section, (None, [], False))
            if nothing_removed and base is self._memo.get(section):
                # Only additions: extend a copy instead of rebuilding (10,000 items).
                memo[section] = {**base, **{k: (item, model) for k, item, model in fresh}}
                continue
            memo[section] = {
                item.get(key): (item, model)
                for item, model in zip(items, getattr(doc, section), strict=True)
            }
        # Freeing the previous raw JSON (hundreds of thousands of objects for a big
        # router) takes milliseconds; keep it until release_retired(), which the
        # agent calls once the answer has gone out.
        self._retired.append((self._memo, self._raw, self.accepted))
        self._memo, self._raw, self.accepted = memo, raw, doc

    def release_retired(self) -> None:
        self._retired.clear()

    def _validate(self, raw: Any) -> RouterDocument:
        if not isinstance(raw, dict) or self.accepted is None:
            return _full_validate(raw)
        prev = self.accepted
        notes: dict[str, tuple[dict, list, bool]] = {}
        # Sections to slot in after validation (model_copy does not validate), so
        # that reused items' validators do not run again.
        ready: dict[str, Any] = {}
        for section, value in raw.items():
            old = self._raw.get(section)
            if (
                section in RouterDocument.model_fields
                and isinstance(value, dict | list)
                and type(old) is type(value)
                and len(old) == len(value)  # an added or removed item: skip the long walk
                and old == value
            ):
                ready[section] = getattr(prev, section)
        for section, (_model, key) in MEMO_SECTIONS.items():
            items = raw.get(section)
            if section in ready or not isinstance(items, list):
                continue
            memo = self._memo.get(section, {})
            adapter = _adapters[section]
            out = []
            fresh: list[tuple[Any, dict, BaseModel]] = []
            hits = 0
            try:
                for item in items:
                    hit = memo.get(item.get(key)) if isinstance(item, dict) else None
                    if hit is not None and hit[0] == item:
                        out.append(hit[1])
                        hits += 1
                    else:
                        model = adapter.validate_python(item)
                        out.append(model)
                        fresh.append((item.get(key), item, model))
            except (ValidationError, TypeError, AttributeError):
                # Report with the whole document's locations: the slow path is fine here.
                return _full_validate(raw)
            ready[section] = out
            # Keys are unique in a valid document, so hits == len(memo) means every
            # remembered item is still there (a repeat would fail verify anyway).
            notes[section] = (
                memo,
                fresh,
                hits == len(memo),
            )  # Big lists stand in empty and are slotted in afterwards; small reused
        # sections pass as model instances, which pydantic keeps as they are.
        stand_ins = {s: [] for s in ready if s in MEMO_SECTIONS}
        instances = {s: v for s, v in ready.items() if s not in MEMO_SECTIONS}
        try:
            base = RouterDocument.model_validate({**raw, **instances, **stand_ins})
        except ValidationError:
            return _full_validate(raw)
        doc = base.model_copy(update={s: ready[s] for s in stand_ins})
        if len(self._notes) > 8:  # parsed but never applied (rejected): forget
            self._notes.clear()
        self._notes[id(doc)] = notes
        derivation.record(
            doc,
            derivation.Derivation(
                base=prev,
                added={s: [m for _k, _i, m in fresh] for s, (_b, fresh, _n) in notes.items()},
                nothing_removed=frozenset(s for s, (_b, _f, none) in notes.items() if none),
            ),
        )
        return doc


def _full_validate(raw: Any) -> RouterDocument:
    try:
        return RouterDocument.model_validate(raw)
    except ValidationError as exc:
        raise DocumentError.from_validation_error(exc) from None
