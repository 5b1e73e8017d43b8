"""Golden-file tests: every template's output for a fixed set of documents.

Regenerate with ``SKIFF_UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden`` and
review the diff (see README.md in this directory).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from appliances.router import nft_model, nft_render
from appliances.router.document import RouterDocument
from appliances.router.parse import RouterParser
from appliances.router.services import dnsmasq
from appliances.router.verify import parse_document

HERE = Path(__file__).parent
DOCS = HERE / "docs"
EXPECTED = HERE / "expected"
UPDATE = os.environ.get("SKIFF_UPDATE_GOLDEN") == "1"

#: Fixed inputs the renders depend on besides the document.
AGENT_PORT = 8443
DNSMASQ_DIR = "/var/lib/skiff/agent/dnsmasq"

DOC_NAMES = sorted(p.stem for p in DOCS.glob("*.json"))
DNSMASQ_FILES = ("dnsmasq.conf", "dhcp-hosts", "dhcp-opts", "hosts", "servers")
#: Element deltas (old, new); both documents must have the same ruleset shape.
DELTAS = [("full", "full-next"), ("full-next", "full")]


def raw(name: str) -> dict:
    return json.loads((DOCS / f"{name}.json").read_text())


def load(name: str) -> RouterDocument:
    return parse_document(raw(name))


def delta(old: str, new: str) -> str | None:
    """The element delta as the agent makes it: the second document parsed by a
    parser that accepted the first, so unchanged items are the same objects."""
    parser = RouterParser()
    old_raw = raw(old)
    old_doc = parser.parse(copy.deepcopy(old_raw))
    parser.accept(old_raw, old_doc)
    new_doc = parser.parse(raw(new))
    deletes, adds = nft_model.element_changes(old_doc, new_doc)
    context = {**nft_model.shape_context(new_doc, AGENT_PORT), "generation": new_doc.generation}
    return nft_render.render_delta(deletes, adds, context)


def shape(name: str) -> str:
    return nft_render.render_shape(nft_model.shape_context(load(name), AGENT_PORT))


def renders(name: str) -> dict[str, str]:
    """Every golden file of one document, by file name."""
    doc = load(name)
    files = {"ruleset.nft": nft_render.render_ruleset(nft_model.plan(doc, AGENT_PORT))}
    files.update(dnsmasq.render(doc, DNSMASQ_DIR))
    return files


def delta_name(old: str, new: str) -> str:
    return f"{old}__{new}.nft"


def compare(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing; run SKIFF_UPDATE_GOLDEN=1 pytest tests/golden"
    expected = path.read_text()
    assert actual == expected, (
        f"{path.relative_to(HERE)} differs from the render; if the change is intended, "
        "regenerate with SKIFF_UPDATE_GOLDEN=1 and review the diff"
    )


def test_fixture_set_is_complete():
    assert {"minimal", "full", "full-next", "public-no-snat"} <= set(DOC_NAMES)


@pytest.mark.parametrize("name", DOC_NAMES)
@pytest.mark.parametrize("file", ["ruleset.nft", *DNSMASQ_FILES])
def test_render_matches_golden(name, file):
    compare(EXPECTED / name / file, renders(name)[file])


@pytest.mark.parametrize(("old", "new"), DELTAS)
def test_delta_matches_golden(old, new):
    assert shape(old) == shape(new), "a delta only makes sense between documents of one shape"
    text = delta(old, new)
    assert text is not None
    compare(EXPECTED / "delta" / delta_name(old, new), text)


@pytest.mark.parametrize("name", DOC_NAMES)
def test_delta_to_itself_is_none(name):
    assert delta(name, name) is None


def test_no_stale_golden_files():
    """Every file under expected/ belongs to a document or delta still tested."""
    wanted = {EXPECTED / n / f for n in DOC_NAMES for f in ("ruleset.nft", *DNSMASQ_FILES)}
    wanted |= {EXPECTED / "delta" / delta_name(o, n) for o, n in DELTAS}
    present = {p for p in EXPECTED.rglob("*") if p.is_file()}
    if UPDATE:
        for stale in present - wanted:
            stale.unlink()
        return
    assert present == wanted


# --- a few semantic spot checks, so a regenerated golden cannot hide them ----


def test_full_ruleset_semantics():
    text = renders("full")["ruleset.nft"]
    # The shifted range is expanded port by port, the equal range is one interval.
    for offset in range(4):
        assert f"203.0.113.11 . udp . {6000 + offset} : 10.1.1.11 . {7000 + offset}," in text
    assert "203.0.113.11 . tcp . 5000-5010 : 10.1.1.11," in text
    # Restricted forwards: the port (range) is limited, and each source is listed.
    assert "203.0.113.12 . tcp . 3306 . 198.51.100.128/25," in text
    assert "203.0.113.12 . udp . 10000-10010 . 192.0.2.7/32," in text
    # Default egress deny: rules accept, the chain ends in drop.
    assert 'counter drop comment "egress default deny"' in text
    assert "@eg_l4 counter accept" in text
    assert 'snat ip to 203.0.113.10 comment "source NAT"' in text
    assert 'iifname "eth0" tcp dport 8443 accept comment "agent"' in text


def test_egress_allow_inverts_rule_verdicts():
    text = renders("public-no-snat")["ruleset.nft"]
    assert "@eg_l4 counter drop" in text and "@eg_all counter drop" in text
    assert 'counter accept comment "egress default allow"' in text
    assert "source NAT" not in text  # no source NAT IP, no snat rule
    assert "chain ingress_filter" in text  # but a public interface


def test_minimal_has_no_public_side():
    text = renders("minimal")["ruleset.nft"]
    assert "ingress_filter" not in text and "jump egress" not in text
    assert "elements" not in text


def test_no_default_gateway_host_gets_no_router():
    files = renders("full")
    assert "02:00:00:00:00:20,set:nogw,10.1.1.20,db1,86400" in files["dhcp-hosts"].splitlines()
    opts = files["dhcp-opts"].splitlines()
    assert "tag:nogw,option:router" in opts
    # RFC 3442: a client given option 121 ignores option 3, so the default route is in 121
    # for normal hosts and absent from nogw hosts' 121.
    assert any(o.startswith("option:classless-static-route,") and o.endswith(",0.0.0.0/0,10.1.1.1")
               for o in opts)
    nogw = [o for o in opts if o.startswith("tag:nogw,option:classless-static-route,")]
    assert nogw and "0.0.0.0/0" not in nogw[0]


def test_dnsmasq_paths_use_the_given_directory():
    conf = renders("minimal")["dnsmasq.conf"]
    for key in ("dhcp-hostsfile", "dhcp-optsfile", "addn-hosts", "servers-file",
                "dhcp-leasefile"):
        assert any(line.startswith(f"{key}={DNSMASQ_DIR}/") for line in conf.splitlines()), key
