"""A redundant pair's documents (mgmt.orchestration.documents.build): both routers
share the gateway and the public addresses, each has its own guest address and
names the other as its VRRP peer, and the router's own verification accepts both."""

from __future__ import annotations

from appliances.router.verify import parse_document
from mgmt.db.models import Zone
from mgmt.db.models.catalog import NetworkOffering
from mgmt.db.models.compute import Nic, Router, VmInstance
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.orchestration.documents import Inputs, Pair, build

OWN = {"r-1-VM": "10.1.1.2", "r-2-VM": "10.1.1.3"}


def inputs(name: str, priority: int) -> Inputs:
    peer = next(ip for other, ip in OWN.items() if other != name)
    snat = PublicIp(id=1, address="203.0.113.10", source_nat=True)
    return Inputs(
        router=Router(id=1, is_redundant=True, priority=priority),
        vm=VmInstance(name=name),
        nics=[
            Nic(traffic_type="Guest", device_id=0, mac="02:00:00:00:00:0" + name[2],
                ip_address=OWN[name]),
            Nic(traffic_type="Control", device_id=1, mac="0e:00:00:00:00:0" + name[2],
                ip_address="169.254.0.1" + name[2], netmask="255.255.255.0"),
            Nic(traffic_type="Public", device_id=2, mac="06:00:00:00:00:0" + name[2],
                ip_address=snat.address, netmask="255.255.255.0", gateway="203.0.113.1"),
        ],
        network=Network(cidr="10.1.1.0/24", gateway="10.1.1.1", network_domain="c.internal"),
        zone=Zone(name="z1", dns1="203.0.113.1"),
        offering=NetworkOffering(egress_default_policy=True),
        public_ips=[snat], public_range=None, instances=[], rules=[],
        addresses={1: snat.address},
        pair=Pair(vrid=7, password="Ab3dEf9h", peer_guest_ip=peer),
    )


def test_each_router_of_the_pair_gets_a_document_its_verification_accepts():
    docs = {name: build(inputs(name, prio)) for name, prio in (("r-1-VM", 150),
                                                               ("r-2-VM", 100))}
    for name, data in docs.items():
        data["generation"] = 1
        doc = parse_document(data)  # raises with the router's own field errors
        red = doc.redundancy
        assert red is not None and red.vrid == 7 and red.sync_interface == "eth0"
        assert [str(o.address) for o in red.own_addresses] == [f"{OWN[name]}/24"]
        assert str(red.peer_ip) == next(ip for n, ip in OWN.items() if n != name)
        assert [str(a) for a in doc.interface("guest").addresses] == ["10.1.1.1/24"]
    assert docs["r-1-VM"]["redundancy"]["priority"] == 150
    assert docs["r-2-VM"]["redundancy"]["priority"] == 100
    shared = {k: v for k, v in docs["r-1-VM"].items() if k not in ("router_id", "interfaces",
                                                                    "redundancy")}
    assert shared == {k: v for k, v in docs["r-2-VM"].items()
                      if k not in ("router_id", "interfaces", "redundancy")}


def test_a_router_not_in_a_pair_has_no_redundancy_section():
    inp = inputs("r-1-VM", 0)
    inp.pair = None
    assert "redundancy" not in build(inp)


def test_the_vrrp_password_is_derived_alike_by_every_server_and_fits_vrrp(tmp_path):
    import datetime
    import re

    from appliances.common import certs
    from mgmt.orchestration.pki import ApplianceCA

    key, cert = certs.make_ca("test CA", datetime.timedelta(days=1))
    pem = certs.cert_pem(cert).decode()
    # Two servers: each loads the CA from the keystore's PEM text.
    one = ApplianceCA(cert, certs.load_key(certs.key_pem(key)), pem, tmp_path)
    two = ApplianceCA(cert, certs.load_key(certs.key_pem(key)), pem, tmp_path)
    assert one.derive_secret("vrrp/net-a") == two.derive_secret("vrrp/net-a")
    assert one.derive_secret("vrrp/net-a") != one.derive_secret("vrrp/net-b")
    assert re.fullmatch(r"[A-Za-z0-9]{8}", one.derive_secret("vrrp/net-a"))
    other_key, _ = certs.make_ca("another CA", datetime.timedelta(days=1))
    three = ApplianceCA(cert, other_key, pem, tmp_path)
    assert three.derive_secret("vrrp/net-a") != one.derive_secret("vrrp/net-a")
