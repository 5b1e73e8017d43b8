"""The vpn section rendered as VICI connections, secrets and pools (no daemon)."""

from __future__ import annotations

from router_docs import error_at, full

from appliances.router import vpn_config
from appliances.router.services.strongswan import render_conf, summarise
from appliances.router.verify import parse_document


def doc_with(vpn: dict, **top):
    data = full()
    data["vpn"] = vpn
    data.update(top)
    return parse_document(data)


def peer(**extra) -> dict:
    return {
        "id": "hq",
        "local_gateway": "203.0.113.10",
        "peer_gateway": "198.51.100.7",
        "local_cidrs": ["10.1.1.0/24"],
        "peer_cidrs": ["10.20.0.0/16", "10.30.0.0/16"],
        "psk": "a-secret-psk",
        **extra,
    }


def ra(**extra) -> dict:
    return {
        "public_ip": "203.0.113.10",
        "pool_start": "10.9.9.10",
        "pool_end": "10.9.9.20",
        "psk": "ra-secret-psk",
        "dns_servers": ["10.1.1.1"],
        "users": [{"name": "alice", "password": "alice-pw"}],
        **extra,
    }


def test_site_to_site_connection():
    d = vpn_config.build(doc_with({"site_to_site": [peer()]}), "kernel")
    conn = d.conns["s2s-hq"]
    assert conn["version"] == "2" and conn["encap"] == "no"
    assert conn["local_addrs"] == ["203.0.113.10"] and conn["remote_addrs"] == ["198.51.100.7"]
    assert conn["proposals"] == ["aes128-sha256-modp2048"]
    assert conn["local"] == {"auth": "psk", "id": "203.0.113.10"}
    assert conn["dpd_delay"] == "30s" and conn["rekey_time"] == "86400s"
    child = conn["children"]["hq"]
    assert child["local_ts"] == ["10.1.1.0/24"]
    assert child["remote_ts"] == ["10.20.0.0/16", "10.30.0.0/16"]
    assert child["esp_proposals"] == ["aes128-sha256-modp2048"]
    assert (child["dpd_action"], child["close_action"]) == ("restart", "start")
    assert d.initiate == {"s2s-hq": ["hq"]}
    assert d.secrets["s2s-hq"] == {
        "type": "IKE",
        "data": "a-secret-psk",
        "owners": ["203.0.113.10", "198.51.100.7"],
    }


def test_passive_split_encap_and_versions():
    d = vpn_config.build(
        doc_with(
            {
                "site_to_site": [
                    peer(
                        passive=True,
                        split_connections=True,
                        force_encap=True,
                        ike_version="ikev1",
                        dpd=False,
                        esp_lifetime_s=1200,
                    )
                ]
            }
        ),
        "kernel",
    )
    conn = d.conns["s2s-hq"]
    assert conn["version"] == "1" and conn["encap"] == "yes" and conn["dpd_delay"] == "0s"
    assert list(conn["children"]) == ["hq-1", "hq-2"]
    assert conn["children"]["hq-2"]["remote_ts"] == ["10.30.0.0/16"]
    assert all(
        c["dpd_action"] == "clear" and c["rekey_time"] == "1200s" for c in conn["children"].values()
    )
    assert d.initiate == {}  # passive: responder only


def test_libipsec_forces_encapsulation():
    d = vpn_config.build(doc_with({"site_to_site": [peer()], "remote_access": ra()}), "libipsec")
    assert {c["encap"] for c in d.conns.values()} == {"yes"}


def test_remote_access():
    d = vpn_config.build(doc_with({"remote_access": ra()}), "kernel")
    assert set(d.conns) == {"ra-ikev2", "ra-xauth"}
    v2, v1 = d.conns["ra-ikev2"], d.conns["ra-xauth"]
    assert v2["remote"] == {"auth": "eap-mschapv2", "eap_id": "%any"}
    assert v2["pools"] == ["ra-pool"] and v2["children"]["ra"]["local_ts"] == ["10.1.1.0/24"]
    assert (v1["version"], v1["remote-1"], v1["remote-2"]) == (
        "1",
        {"auth": "psk"},
        {"auth": "xauth"},
    )
    assert d.pools == {"ra-pool": {"addrs": "10.9.9.10-10.9.9.20", "dns": ["10.1.1.1"]}}
    assert d.secrets["ra-eap-alice"] == {"type": "EAP", "data": "alice-pw", "owners": ["alice"]}
    assert d.secrets["ra-xauth-alice"]["type"] == "XAUTH"
    assert d.users == ["alice"]


def test_one_peer_change_touches_one_connection():
    a = vpn_config.build(
        doc_with({"site_to_site": [peer(), peer(id="br", peer_gateway="198.51.100.8")]})
    )
    b = vpn_config.build(
        doc_with(
            {
                "site_to_site": [
                    peer(),
                    peer(id="br", peer_gateway="198.51.100.8", esp_policy="aes256-sha256"),
                ]
            }
        )
    )
    assert a.conns["s2s-hq"] == b.conns["s2s-hq"] and a.secrets == b.secrets
    assert a.conns["s2s-br"] != b.conns["s2s-br"]


def test_document_refuses_weak_and_bad_pools():
    data = full()
    data["vpn"] = {"site_to_site": [peer(ike_policy="3des-md5;modp1024")]}
    error_at(data, "vpn.site_to_site.0.ike_policy", "weak", "allow_weak")
    data["vpn"] = {"site_to_site": [peer(ike_policy="3des-md5;modp1024", allow_weak=True)]}
    assert parse_document(data).vpn.site_to_site[0].allow_weak
    data["vpn"] = {"remote_access": ra(pool_start="10.9.9.30")}
    error_at(data, "vpn.remote_access.pool_end", "before")
    data["vpn"] = {"remote_access": ra(pool_start="10.1.1.200", pool_end="10.1.1.220")}
    error_at(data, "vpn.remote_access.pool_start", "overlaps the guest network")


def test_charon_conf_names_its_socket_and_data_path(tmp_path):
    conf = render_conf("r-1", tmp_path / "charon.vici", "libipsec")
    assert f"socket = unix://{tmp_path}/charon.vici" in conf
    load = next(line for line in conf.splitlines() if "load =" in line)
    assert load.index("kernel-libipsec") < load.index("kernel-netlink")
    kernel = render_conf("r-1", tmp_path / "s", "kernel")
    assert "kernel-libipsec" not in next(x for x in kernel.splitlines() if "load =" in x)


def test_status_summary():
    d = vpn_config.build(
        doc_with(
            {
                "site_to_site": [peer(), peer(id="br", peer_gateway="198.51.100.8")],
                "remote_access": ra(),
            }
        )
    )
    sas = [
        {
            "s2s-hq": {
                "uniqueid": "3",
                "state": "ESTABLISHED",
                "child-sas": {
                    "hq-5": {
                        "state": "INSTALLED",
                        "bytes-in": "100",
                        "bytes-out": "50",
                        "spi-in": "c1",
                        "spi-out": "c2",
                    }
                },
            }
        },
        {
            "ra-ikev2": {
                "uniqueid": "7",
                "state": "ESTABLISHED",
                "remote-eap-id": "alice",
                "remote-vips": ["10.9.9.10"],
                "remote-host": "203.0.113.50",
            }
        },
    ]
    out = summarise(d, sas, {"s2s-br": "establishing IKE_SA 's2s-br' failed"})
    hq = out["connections"]["s2s-hq"]
    assert (hq["state"], hq["child_sas"], hq["bytes_in"], hq["ike_ids"]) == (
        "Connected",
        1,
        100,
        ["3"],
    )
    assert out["connections"]["s2s-br"]["state"] == "Error"
    assert "failed" in out["connections"]["s2s-br"]["reason"]
    assert out["remote_access_users"] == [
        {
            "user": "alice",
            "connection": "ra-ikev2",
            "state": "ESTABLISHED",
            "virtual_ips": ["10.9.9.10"],
            "remote": "203.0.113.50",
            "ike_id": "7",
        }
    ]
