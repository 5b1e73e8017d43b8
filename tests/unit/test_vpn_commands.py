"""The VPN commands' pure checks (mgmt.commands.remoteaccess, sitetosite) and the
routers' view of connection states (mgmt.orchestration.vpnstate)."""

from __future__ import annotations

import pytest

from mgmt.api.errors import ApiError
from mgmt.commands.remoteaccess import ip_range, new_psk
from mgmt.commands.sitetosite import gateway_columns, overlaps, policy
from mgmt.orchestration.vpnstate import doc_id, states_from, strongswan_name


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(ApiError) as err:
        fn(*args, **kwargs)
    assert err.value.code == 431
    return err.value.text


def test_remote_access_ranges():
    assert ip_range("10.1.2.1-10.1.2.8", "10.1.1.0/24") == ("10.1.2.1", "10.1.2.8")
    assert ip_range("10.9.0.5", "10.1.1.0/24") == ("10.9.0.5", "10.9.0.5")
    assert "before" in refused(ip_range, "10.1.2.8-10.1.2.1", "10.1.1.0/24")
    assert "overlaps" in refused(ip_range, "10.1.1.200-10.1.1.250", "10.1.1.0/24")
    assert "overlaps" in refused(ip_range, "10.1.0.1-10.1.2.1", "10.1.1.0/24")  # around it
    assert "more than" in refused(ip_range, "10.8.0.0-10.9.0.0", "10.1.1.0/24")
    assert "like" in refused(ip_range, "a-b", "10.1.1.0/24")
    psk = new_psk()
    assert len(psk) == 24 and psk.isalnum() and psk != new_psk()


def test_policies_are_judged_by_the_router_module():
    assert policy("ikepolicy", "AES128-SHA1;MODP1536", "ike") == "aes128-sha1;modp1536"
    assert policy("esppolicy", "aes256gcm16", "esp") == "aes256gcm16"
    text = refused(policy, "esppolicy", "3des-md5", "esp")
    assert "weak" in text and "3DES" in text and "allow_weak" not in text
    assert "DH group" in refused(policy, "ikepolicy", "aes128-sha256", "ike")
    assert "unknown cipher" in refused(policy, "ikepolicy", "rot13-sha1;modp2048", "ike")


def test_customer_gateway_columns():
    args = {
        "gateway": "198.51.100.7",
        "cidrlist": ["10.9.0.0/24", "10.8.0.0/16"],
        "ipsecpsk": "psk-12345",
        "ikepolicy": "aes128-sha256;modp2048",
        "esppolicy": "aes128-sha256",
        "ikeversion": "ikev2",
        "dpd": True,
    }
    cols = gateway_columns(args, 10)
    assert cols["cidr_list"] == "10.9.0.0/24,10.8.0.0/16"
    assert (cols["ike_lifetime"], cols["esp_lifetime"]) == (86400, 3600)
    assert (cols["ike_version"], cols["dpd"]) == ("ikev2", True)
    assert "0.0.0.0" in refused(gateway_columns, {**args, "gateway": "0.0.0.0"}, 10)
    assert "1 to 1" in refused(gateway_columns, args, 1)
    assert "esplifetime" in refused(gateway_columns, {**args, "esplifetime": 100}, 10)
    assert "ipsecpsk" in refused(gateway_columns, {**args, "ipsecpsk": "with space"}, 10)
    # An update changes only what it is given.
    assert gateway_columns({"esplifetime": 600}, 10, current=object()) == {"esp_lifetime": 600}


def test_overlaps():
    assert overlaps("10.1.0.0/16", "10.2.0.0/16,10.1.5.0/24")
    assert not overlaps("10.1.0.0/16", "10.2.0.0/16")


def test_connection_states_from_the_agent_status():
    status = {
        "services": {
            "vpn": {
                "connections": {
                    strongswan_name(7): {"state": "Connected", "ike_sas": 1},
                    strongswan_name(8): {"state": "Error", "reason": "no proposal chosen"},
                    strongswan_name(9): {"state": "Connecting?"},
                    "ra-ikev2": {"state": "Listening"},
                    "s2s-tunnel": {"state": "Connected"},
                }
            }
        }
    }
    assert states_from(status) == {
        7: ("Connected", None),
        8: ("Error", "no proposal chosen"),
        9: ("Disconnected", None),
    }
    assert states_from({"services": {}}) == {}
    assert doc_id(6) == "s2s-6"  # as mgmt.orchestration.documents names it
