"""Remote access VPN, VPN users and site-to-site objects on a live server
(tests/mgmt/rules/rules_world.py)."""

from __future__ import annotations

from rules_world import api_error, call


async def test_remote_access_vpn_and_users(world):
    alice, admin, ip = world["alice"], world["admin"], world["ips"][0]
    vpn = (await call(alice, "createRemoteAccessVpn", publicipid=ip))["remoteaccessvpn"]
    assert vpn["iprange"] == "10.1.2.1-10.1.2.8" and vpn["state"] == "Running"
    assert len(vpn["presharedkey"]) == 24 and vpn["publicip"] == "203.0.113.10"
    again = await api_error(call(alice, "createRemoteAccessVpn", publicipid=world["ips"][1]))
    assert again["errorcode"] == 431 and "already" in again["errortext"]
    assert (await call(alice, "listRemoteAccessVpns", publicipid=ip))["count"] == 1
    busy = await api_error(call(alice, "disassociateIpAddress", id=ip))
    assert busy["errorcode"] == 431

    user = (await call(alice, "addVpnUser", username="bob", password="secret-1"))["vpnuser"]
    assert (user["username"], user["state"], user["account"]) == ("bob", "Active", "alice")
    dup = await api_error(call(alice, "addVpnUser", username="bob", password="secret-2"))
    assert dup["errorcode"] == 431 and "exists" in dup["errortext"]
    bad = await api_error(call(alice, "addVpnUser", username="-x", password="secret-2"))
    assert bad["errorcode"] == 431 and "username" in bad["errortext"]
    quote = await api_error(call(alice, "addVpnUser", username="carol", password='a"bcdefg'))
    assert quote["errorcode"] == 431 and "password" in quote["errortext"]
    await call(admin, "updateConfiguration", name="remote.access.vpn.user.limit", value="1")
    full = await api_error(call(alice, "addVpnUser", username="carol", password="secret-3"))
    assert full["errorcode"] == 532 and "limit" in full["errortext"]
    assert [u["username"] for u in (await call(alice, "listVpnUsers"))["vpnuser"]] == ["bob"]
    await call(alice, "removeVpnUser", username="bob")
    assert await call(alice, "listVpnUsers") == {}
    gone = await api_error(call(alice, "removeVpnUser", username="bob"))
    assert gone["errorcode"] == 431

    await call(alice, "deleteRemoteAccessVpn", publicipid=ip)
    assert await call(alice, "listRemoteAccessVpns") == {}
    inside = await api_error(
        call(alice, "createRemoteAccessVpn", publicipid=ip, iprange="10.20.5.1-10.20.5.9")
    )
    assert inside["errorcode"] == 431 and "overlaps the guest network" in inside["errortext"]


async def test_site_to_site_objects(world):
    alice = world["alice"]
    gw = {
        "gateway": "198.51.100.7",
        "cidrlist": "10.99.0.0/24",
        "ipsecpsk": "s3cret-psk",
        "ikepolicy": "aes128-sha1;modp1536",
        "esppolicy": "aes128-sha1",
    }
    weak = await api_error(
        call(alice, "createVpnCustomerGateway", **{**gw, "ikepolicy": "3des-md5;modp1024"})
    )
    assert weak["errorcode"] == 431 and "weak" in weak["errortext"]
    nogroup = await api_error(
        call(alice, "createVpnCustomerGateway", **{**gw, "ikepolicy": "aes128-sha1"})
    )
    assert nogroup["errorcode"] == 431 and "DH group" in nogroup["errortext"]
    short = await api_error(call(alice, "createVpnCustomerGateway", **{**gw, "ipsecpsk": "x"}))
    assert short["errorcode"] == 431 and "ipsecpsk" in short["errortext"]
    customer = (await call(alice, "createVpnCustomerGateway", name="branch", **gw))[
        "vpncustomergateway"
    ]
    assert (customer["ikelifetime"], customer["esplifetime"]) == (86400, 3600)
    assert customer["ikeversion"] == "ike" and customer["dpd"] is False
    same = await api_error(call(alice, "createVpnCustomerGateway", name="other", **gw))
    assert same["errorcode"] == 431 and "198.51.100.7" in same["errortext"]
    inside = (
        await call(
            alice,
            "createVpnCustomerGateway",
            name="inside",
            **{**gw, "gateway": "198.51.100.8", "cidrlist": "10.20.1.0/24"},
        )
    )["vpncustomergateway"]

    [vgw] = (await call(alice, "listVpnGateways"))["vpngateway"]
    assert vgw["id"] == world["vpngateway"] and vgw["publicip"] == "203.0.113.10"
    overlap = await api_error(
        call(
            alice,
            "createVpnConnection",
            s2svpngatewayid=vgw["id"],
            s2scustomergatewayid=inside["id"],
        )
    )
    assert overlap["errorcode"] == 431 and "overlaps network" in overlap["errortext"]
    conn = (
        await call(
            alice,
            "createVpnConnection",
            s2svpngatewayid=vgw["id"],
            s2scustomergatewayid=customer["id"],
            passive="true",
        )
    )["vpnconnection"]
    # No router: the connection is applied to nothing and the tunnel is not up.
    assert conn["state"] == "Disconnected" and conn["passive"] is True
    assert (conn["gateway"], conn["publicip"]) == ("198.51.100.7", "203.0.113.10")
    twice = await api_error(
        call(
            alice,
            "createVpnConnection",
            s2svpngatewayid=vgw["id"],
            s2scustomergatewayid=customer["id"],
        )
    )
    assert twice["errorcode"] == 431
    in_use = await api_error(call(alice, "deleteVpnCustomerGateway", id=customer["id"]))
    assert in_use["errorcode"] == 536
    changed = (
        await call(
            alice, "updateVpnCustomerGateway", id=customer["id"], ikepolicy="aes256-sha256;modp2048"
        )
    )["vpncustomergateway"]
    assert changed["ikepolicy"] == "aes256-sha256;modp2048" and changed["gateway"] == gw["gateway"]
    [listed] = (await call(alice, "listVpnConnections"))["vpnconnection"]
    assert listed["ikepolicy"] == "aes256-sha256;modp2048"
    reset = await api_error(call(alice, "deleteVpnGateway", id=vgw["id"]))
    assert reset["errorcode"] == 536
    await call(alice, "deleteVpnConnection", id=conn["id"])
    assert await call(alice, "listVpnConnections") == {}
    await call(alice, "deleteVpnCustomerGateway", id=customer["id"])
    await call(alice, "deleteVpnGateway", id=vgw["id"])
    assert await call(alice, "listVpnGateways") == {}
    vpc = await api_error(
        call(alice, "createVpnGateway", vpcid="00000000-0000-0000-0000-000000000001")
    )
    assert vpc["errorcode"] == 431 and "VPC" in vpc["errortext"]
