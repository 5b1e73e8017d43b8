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
from appliances.router import verify
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
        for section, (_model, key) in MEMO_SECTIONS.items():
            items = raw.get(section) or []
            if prev is not None and getattr(doc, section) is getattr(prev, section):
                memo[section] = self._memo[section]  # the very same items
                continue
            memo[section] = {
                item.get(key): (item, model)
                for item, model in zip(items, getattr(doc, section), strict=True)
            }
        self._memo, self._raw, self.accepted = memo, raw, doc

    def _validate(self, raw: Any) -> RouterDocument:
        if not isinstance(raw, dict) or self.accepted is None:
            return _full_validate(raw)
        prev = self.accepted
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
            try:
                for item in items:
                    hit = memo.get(item.get(key)) if isinstance(item, dict) else None
                    if hit is not None and hit[0] == item:
                        out.append(hit[1])
                    else:
                        out.append(adapter.validate_python(item))
            except (ValidationError, TypeError, AttributeError):
                # Report with the whole document's locations: the slow path is fine here.
                return _full_validate(raw)
            ready[section] = out
        # Big lists stand in empty and are slotted in afterwards; small reused
        # sections pass as model instances, which pydantic keeps as they are.
        stand_ins = {s: [] for s in ready if s in MEMO_SECTIONS}
        instances = {s: v for s, v in ready.items() if s not in MEMO_SECTIONS}
        try:
            base = RouterDocument.model_validate({**raw, **instances, **stand_ins})
        except ValidationError:
            return _full_validate(raw)
        return base.model_copy(update={s: ready[s] for s in stand_ins})


def _full_validate(raw: Any) -> RouterDocument:
    try:
        return RouterDocument.model_validate(raw)
    except ValidationError as exc:
        raise DocumentError.from_validation_error(exc) from None
