"""Parsing router documents so that the work grows with the change.

The management server always sends the whole document, and a router with
10,000 forwards gets a 3 MB document for every one-rule change. Building
10,000 validated models again costs far more than the change itself, so the
parser remembers the raw JSON and the model of every item of the last accepted
document, by key, and reuses the model when the raw item is equal (a C-level
dict comparison). Reused items are the *same objects*, which lets verify, the
nftables delta and dnsmasq find what changed by identity; the parser also
records what it validated anew (appliances/router/derivation.py) so they need
not even scan for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from appliances.common.errors import DocumentError
from appliances.router import derivation, verify
from appliances.router.document import (
    DhcpHost,
    DnsRecord,
    Egress,
    EgressRule,
    IngressRule,
    PortForward,
    PublicIp,
    RouterDocument,
    StaticNat,
)
from appliances.router.sections.guest_data import InstanceData
from appliances.router.sections.load_balancing import LbRule


@dataclass(frozen=True)
class ListSection:
    """A list of items in the document worth remembering item by item."""

    path: tuple[str, ...]  # ("port_forwards",) or ("egress", "rules")
    model: type[BaseModel]
    key: str  # the raw field that identifies an item; a key seen twice only costs reuse

    def get(self, obj: Any) -> Any:
        for part in self.path:
            obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
        return obj


#: Named as the consumers (verify, nft_model) name them.
SECTIONS: dict[str, ListSection] = {
    "port_forwards": ListSection(("port_forwards",), PortForward, "id"),
    "ingress_rules": ListSection(("ingress_rules",), IngressRule, "id"),
    "egress_rules": ListSection(("egress", "rules"), EgressRule, "id"),
    "dhcp_hosts": ListSection(("dhcp_hosts",), DhcpHost, "mac"),
    "dns_records": ListSection(("dns_records",), DnsRecord, "name"),
    "public_ips": ListSection(("public_ips",), PublicIp, "ip"),
    "static_nats": ListSection(("static_nats",), StaticNat, "public_ip"),
    "load_balancers": ListSection(("load_balancers",), LbRule, "id"),
    "guest_data": ListSection(("guest_data",), InstanceData, "mac"),
}
TOP_LEVEL = {name for name, s in SECTIONS.items() if len(s.path) == 1}

_adapters = {name: TypeAdapter(s.model) for name, s in SECTIONS.items()}

Memo = dict[Any, tuple[dict, BaseModel]]


class _Invalid(Exception):
    """Some item failed validation: redo the whole document for complete errors."""


@dataclass
class _Walk:
    """One list's items after a parse, and how they relate to the memo."""

    memo: Memo  # the memo the walk used
    items: list
    fresh: list[tuple[Any, dict, BaseModel]]
    nothing_removed: bool


def _walk(section: str, raw_items: list, memo: Memo) -> _Walk:
    key = SECTIONS[section].key
    adapter = _adapters[section]
    out: list = []
    fresh: list[tuple[Any, dict, BaseModel]] = []
    hits = 0
    try:
        for item in raw_items:
            hit = memo.get(item.get(key)) if isinstance(item, dict) else None
            if hit is not None and hit[0] == item:
                out.append(hit[1])
                hits += 1
            else:
                model = adapter.validate_python(item)
                out.append(model)
                fresh.append((item.get(key), item, model))
    except (ValidationError, TypeError, AttributeError):
        raise _Invalid from None
    # Keys are unique in a valid document, so hits == len(memo) means every
    # remembered item is still there (a repeat would fail verify anyway).
    return _Walk(memo, out, fresh, hits == len(memo))


class RouterParser:
    """Validates documents against the last accepted one. One per agent."""

    def __init__(self) -> None:
        self._memo: dict[str, Memo] = {}
        self._raw: dict = {}
        self.accepted: RouterDocument | None = None
        # Walks of recently parsed documents (by id), for accept().
        self._walks: dict[int, dict[str, _Walk]] = {}
        self._retired: list[tuple] = []

    def parse(self, raw: Any) -> RouterDocument:
        """A valid document, or DocumentError naming every bad field."""
        doc = self._validate(raw)
        if self.accepted is not None and verify.still_valid(self.accepted, doc):
            return doc
        verify.check(doc)
        return doc

    def accept(self, raw: dict, doc: RouterDocument) -> None:
        """Remember ``doc`` (applied) and its raw items for the next parse."""
        walks = self._walks.pop(id(doc), {})
        self._walks.clear()
        memo: dict[str, Memo] = {}
        for name, section in SECTIONS.items():
            items = section.get(doc) or []
            old = self._memo.get(name)
            if self.accepted is not None and items is section.get(self.accepted):
                memo[name] = old  # the very same items
                continue
            walk = walks.get(name)
            if walk is not None and walk.nothing_removed and walk.memo is old:
                # Only additions: extend a copy instead of rebuilding (10,000 items).
                memo[name] = {**old, **{k: (item, model) for k, item, model in walk.fresh}}
                continue
            raw_items = section.get(raw) or []
            key = section.key
            memo[name] = {
                item.get(key): (item, model) for item, model in zip(raw_items, items, strict=True)
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
        try:
            return self._validate_with_memo(raw, self.accepted)
        except (_Invalid, ValidationError):
            # Report with the whole document's locations: the slow path is fine here.
            return _full_validate(raw)

    def _validate_with_memo(self, raw: dict, prev: RouterDocument) -> RouterDocument:
        # A whole top-level section equal to the last one is reused as it is.
        reused: dict[str, Any] = {}
        for field, value in raw.items():
            old = self._raw.get(field)
            if (
                field in RouterDocument.model_fields
                and isinstance(value, dict | list)
                and type(old) is type(value)
                and len(old) == len(value)  # an item added or removed: skip the long walk
                and old == value
            ):
                reused[field] = getattr(prev, field)
        walks: dict[str, _Walk] = {}
        for name, section in SECTIONS.items():
            raw_items = section.get(raw)
            if section.path[0] in reused or not isinstance(raw_items, list):
                continue
            walks[name] = _walk(name, raw_items, self._memo.get(name, {}))
        if "egress_rules" in walks:
            egress = dict(raw["egress"])
            egress["rules"] = []
            model = Egress.model_validate(egress)
            reused["egress"] = model.model_copy(update={"rules": walks["egress_rules"].items})
        # Big lists stand in empty while the rest is validated and are slotted in
        # afterwards (model_copy does not validate, so their items' validators do
        # not run again); other reused sections pass as model instances, which
        # pydantic keeps as they are.
        lists = {
            name: walks[name].items if name in walks else reused[name]
            for name in TOP_LEVEL
            if name in walks or name in reused
        }
        base = RouterDocument.model_validate(
            {**raw, **reused, **{name: [] for name in lists}}
        )
        doc = base.model_copy(update=lists)
        if len(self._walks) > 8:  # parsed but never applied (rejected): forget
            self._walks.clear()
        self._walks[id(doc)] = walks
        derivation.record(
            doc,
            derivation.Derivation(
                base=prev,
                added={name: [m for _k, _i, m in w.fresh] for name, w in walks.items()},
                nothing_removed=frozenset(n for n, w in walks.items() if w.nothing_removed),
            ),
        )
        return doc


def _full_validate(raw: Any) -> RouterDocument:
    try:
        return RouterDocument.model_validate(raw)
    except ValidationError as exc:
        raise DocumentError.from_validation_error(exc) from None
