"""From a router document's vpn section to what strongSwan is given over VICI.

Pure: connections, shared secrets and pools as VICI messages keyed by their names, so
the service can diff desired against applied and touch only what differs. Names:

* ``s2s-<id>``: one connection per site-to-site peer; children ``<id>`` or, with
  split_connections, ``<id>-<k>`` (one per local/peer CIDR pair); secret ``s2s-<id>``.
* ``ra-ikev2`` (EAP-MSCHAPv2 users) and ``ra-xauth`` (IKEv1 PSK + XAuth), pool
  ``ra-pool``; secrets ``ra-psk``, ``ra-eap-<user>``, ``ra-xauth-<user>``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from appliances.router.document import RouterDocument
from appliances.router.sections.vpn import RemoteAccess, SiteToSite
from appliances.router.vpn_policy import to_strongswan

DATAPATHS = ("kernel", "libipsec")
RA_CONNS = ("ra-ikev2", "ra-xauth")
RA_POOL = "ra-pool"
IKE_VERSIONS = {"ikev1": "1", "ikev2": "2", "ike": "0"}


@dataclass
class Desired:
    conns: dict[str, dict] = field(default_factory=dict)
    secrets: dict[str, dict] = field(default_factory=dict)
    pools: dict[str, dict] = field(default_factory=dict)
    #: connection name -> its children to initiate (site-to-site, not passive)
    initiate: dict[str, list[str]] = field(default_factory=dict)
    #: remote-access user names
    users: list[str] = field(default_factory=list)


def conn_name(conn: SiteToSite) -> str:
    return f"s2s-{conn.id}"


def site_to_site(conn: SiteToSite, datapath: str) -> tuple[dict, list[str]]:
    """(VICI connection, child names) of one peer; PolicyError for a refused policy."""
    ike = to_strongswan(conn.ike_policy, kind="ike", allow_weak=conn.allow_weak)
    esp = to_strongswan(conn.esp_policy, kind="esp", allow_weak=conn.allow_weak)
    if conn.split_connections:
        pairs = [([lc], [pc]) for lc in conn.local_cidrs for pc in conn.peer_cidrs]
        names = [f"{conn.id}-{k}" for k in range(1, len(pairs) + 1)]
    else:
        pairs = [(list(conn.local_cidrs), list(conn.peer_cidrs))]
        names = [conn.id]
    children = {
        name: {
            "mode": "tunnel",
            "local_ts": [str(c) for c in local],
            "remote_ts": [str(c) for c in peer],
            "esp_proposals": esp,
            "rekey_time": f"{conn.esp_lifetime_s}s",
            "dpd_action": "clear" if conn.passive else "restart",
            "start_action": "none",
            "close_action": "none" if conn.passive else "start",
        }
        for name, (local, peer) in zip(names, pairs, strict=True)
    }
    body = {
        "version": IKE_VERSIONS[conn.ike_version],
        "local_addrs": [str(conn.local_gateway)],
        "remote_addrs": [str(conn.peer_gateway)],
        "proposals": ike,
        "rekey_time": f"{conn.ike_lifetime_s}s",
        "dpd_delay": f"{conn.dpd_interval_s}s" if conn.dpd else "0s",
        # kernel-libipsec carries ESP in UDP only: encapsulation is forced there.
        "encap": "yes" if conn.force_encap or datapath == "libipsec" else "no",
        "mobike": "no",
        "local": {"auth": "psk", "id": str(conn.local_gateway)},
        "remote": {"auth": "psk", "id": str(conn.peer_gateway)},
        "children": children,
    }
    return body, names


def remote_access(ra: RemoteAccess, guest_cidr: str, datapath: str) -> dict[str, dict]:
    """The two remote-access connections (IKEv2 EAP, IKEv1 XAuth) on ra.public_ip."""
    common = {
        "local_addrs": [str(ra.public_ip)],
        "pools": [RA_POOL],
        "dpd_delay": "30s",
        "encap": "yes" if datapath == "libipsec" else "no",
        "unique": "never",
        "local": {"auth": "psk", "id": str(ra.public_ip)},
    }
    child = {
        "mode": "tunnel",
        "local_ts": [str(guest_cidr)],
        "dpd_action": "clear",
        "esp_proposals": ["default"],
    }
    return {
        "ra-ikev2": {
            **common,
            "version": "2",
            "proposals": ["default"],
            "remote": {"auth": "eap-mschapv2", "eap_id": "%any"},
            "children": {"ra": child},
        },
        "ra-xauth": {
            **common,
            "version": "1",
            "proposals": ["default"],
            "remote-1": {"auth": "psk"},
            "remote-2": {"auth": "xauth"},
            "children": {"ra-xauth": child},
        },
    }


def build(doc: RouterDocument, datapath: str = "kernel") -> Desired:
    """Everything strongSwan should hold for doc; PolicyError for a refused policy."""
    if datapath not in DATAPATHS:
        raise ValueError(f"unknown IPsec data path {datapath!r} (use {' or '.join(DATAPATHS)})")
    out = Desired()
    for conn in doc.vpn.site_to_site:
        name = conn_name(conn)
        body, children = site_to_site(conn, datapath)
        out.conns[name] = body
        if not conn.passive:
            out.initiate[name] = children
        # Owners: both gateways, so this key outranks the remote-access key on the
        # same public IP (which matches the local identity only).
        out.secrets[name] = {
            "type": "IKE",
            "data": conn.psk,
            "owners": [str(conn.local_gateway), str(conn.peer_gateway)],
        }
    ra = doc.vpn.remote_access
    if ra is not None:
        out.conns.update(remote_access(ra, str(doc.guest_network.cidr), datapath))
        out.pools[RA_POOL] = {
            "addrs": f"{ra.pool_start}-{ra.pool_end}",
            **({"dns": [str(ip) for ip in ra.dns_servers]} if ra.dns_servers else {}),
        }
        out.secrets["ra-psk"] = {
            "type": "IKE",
            "data": ra.psk,
            "owners": [str(ra.public_ip), "%any"],
        }
        for user in ra.users:
            out.secrets[f"ra-eap-{user.name}"] = {
                "type": "EAP",
                "data": user.password,
                "owners": [user.name],
            }
            out.secrets[f"ra-xauth-{user.name}"] = {
                "type": "XAUTH",
                "data": user.password,
                "owners": [user.name],
            }
            out.users.append(user.name)
    return out


def pool_size(ra: RemoteAccess) -> int:
    return int(ipaddress.IPv4Address(ra.pool_end)) - int(ipaddress.IPv4Address(ra.pool_start)) + 1
