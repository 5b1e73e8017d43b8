"""Golden files for a redundant router's keepalived.conf and conntrackd.conf.

Regenerate with ``SKIFF_UPDATE_GOLDEN=1`` like the other golden files; the
expected files live in ``tests/golden/redundancy/`` (not ``expected/``, which
belongs to the per-document renders of tests/golden/test_golden.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pair_docs import pair_document

from appliances.router.ha_render import HaPaths, render_conntrackd, render_keepalived
from appliances.router.verify import parse_document

HERE = Path(__file__).parents[1] / "golden" / "redundancy"
UPDATE = os.environ.get("SKIFF_UPDATE_GOLDEN") == "1"
PATHS = HaPaths(Path("/var/lib/skiff/agent/redundancy"))


def compare(name: str, actual: str) -> None:
    path = HERE / name
    if UPDATE:
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing; run SKIFF_UPDATE_GOLDEN=1 pytest tests/golden"
    assert actual == path.read_text(), (
        f"{name} differs from the render; if intended, regenerate with SKIFF_UPDATE_GOLDEN=1"
    )


@pytest.mark.parametrize(
    ("name", "render"),
    [("keepalived.conf", render_keepalived), ("conntrackd.conf", render_conntrackd)],
)
def test_render_matches_golden(name, render):
    compare(name, render(parse_document(pair_document()), PATHS))


def test_one_fixed_primary_vip_per_segment_the_rest_excluded():
    text = render_keepalived(parse_document(pair_document()), PATHS)
    primary = text.split("virtual_ipaddress {")[1].split("}")[0].split()
    excluded = text.split("virtual_ipaddress_excluded {")[1].split("}")[0].split()
    assert primary == ["10.1.1.1/24", "dev", "eth0", "203.0.113.10/24", "dev", "eth2"]
    assert excluded == [
        "198.51.100.1/28",
        "dev",
        "eth2",
        "203.0.113.11/32",
        "dev",
        "eth2",
        "203.0.113.12/32",
        "dev",
        "eth2",
    ]
    # The control address is never shared.
    assert "169.254.3.2" not in text
    assert "0.0.0.0/0 via 203.0.113.1 dev eth2" in text


def test_adding_a_public_ip_changes_only_the_excluded_block():
    raw = pair_document()
    before = render_keepalived(parse_document(raw), PATHS)
    raw["public_ips"].append({"ip": "203.0.113.13"})
    after = render_keepalived(parse_document(raw), PATHS)
    head = before.split("virtual_ipaddress_excluded")[0]
    assert after.split("virtual_ipaddress_excluded")[0] == head
    assert "203.0.113.13/32 dev eth2" in after


def test_password_is_quoted_and_hostile_ones_are_refused():
    from appliances.common.errors import DocumentError

    text = render_keepalived(parse_document(pair_document()), PATHS)
    assert 'auth_pass "s3cr#t!~"' in text
    for bad in ['a"b', "a\\b", "a$b", "a b", "a\nb", "123456789"]:
        with pytest.raises(DocumentError):
            parse_document(pair_document(password=bad))


def test_conntrackd_syncs_unicast_and_ignores_the_routers_own_addresses():
    text = render_conntrackd(parse_document(pair_document()), PATHS)
    assert "IPv4_address 10.1.1.2\n" in text and "IPv4_Destination_Address 10.1.1.3" in text
    ignored = text.split("Address Ignore {")[1].split("}")[0].split()[1::2]
    assert ignored == ["127.0.0.1", "10.1.1.3", "10.1.1.2", "203.0.113.20", "169.254.3.2"]
    # Shared addresses carry the NAT'd connections that must be synced.
    assert "203.0.113.10" not in ignored
