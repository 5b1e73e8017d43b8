"""Load balancer rules, members and policies on a live server (see rules_world.py)."""

from __future__ import annotations

from rules_world import api_error, call
from sqlalchemy import select

from mgmt.db.models.rules import LbMember, LbPolicy


async def test_load_balancer_rule_members_and_delete(world):
    alice, ip = world["alice"], world["ips"][1]
    lb = (
        await call(
            alice,
            "createLoadBalancerRule",
            name="web",
            algorithm="roundrobin",
            publicipid=ip,
            publicport=80,
            privateport=8080,
            cidrlist="198.51.100.0/24",
        )
    )["loadbalancer"]
    assert lb["state"] == "Active" and lb["publicip"] == "203.0.113.11"
    assert (lb["publicport"], lb["privateport"], lb["protocol"]) == ("80", "8080", "tcp")
    assert lb["account"] == "alice" and lb["networkid"] == world["net"]["id"]
    assert lb["cidrlist"] == "198.51.100.0/24" and lb["zonename"] == "z1"
    # openfirewall (default): the matching firewall rule is recorded.
    [fw] = (await call(alice, "listFirewallRules", ipaddressid=ip))["firewallrule"]
    assert (fw["startport"], fw["cidrlist"], fw["state"]) == (80, "198.51.100.0/24", "Active")

    await call(
        alice, "assignToLoadBalancerRule", id=lb["id"], virtualmachineids=",".join(world["vms"])
    )
    members = await call(alice, "listLoadBalancerRuleInstances", id=lb["id"])
    assert sorted(m["name"] for m in members["loadbalancerruleinstance"]) == ["web1", "web2"]
    with_ips = await call(alice, "listLoadBalancerRuleInstances", id=lb["id"], lbvmips="true")
    assert sorted(e["lbvmipaddresses"][0] for e in with_ips["lbrulevmidip"]) == [
        "10.20.0.10",
        "10.20.0.11",
    ]
    again = await api_error(
        call(alice, "assignToLoadBalancerRule", id=lb["id"], virtualmachineids=world["vms"][0])
    )
    assert again["errorcode"] == 431 and "already assigned" in again["errortext"]
    await call(alice, "removeFromLoadBalancerRule", id=lb["id"], virtualmachineids=world["vms"][0])
    left = await call(alice, "listLoadBalancerRuleInstances", id=lb["id"])
    assert [m["name"] for m in left["loadbalancerruleinstance"]] == ["web2"]
    free = await call(alice, "listLoadBalancerRuleInstances", id=lb["id"], applied="false")
    assert [m["name"] for m in free["loadbalancerruleinstance"]] == ["web1"]
    mine = await call(alice, "listLoadBalancerRules", virtualmachineid=world["vms"][1])
    assert [r["id"] for r in mine["loadbalancerrule"]] == [lb["id"]]

    updated = (
        await call(
            alice, "updateLoadBalancerRule", id=lb["id"], algorithm="leastconn", name="web-lb"
        )
    )["loadbalancer"]
    assert (updated["algorithm"], updated["name"]) == ("leastconn", "web-lb")

    await call(alice, "deleteLoadBalancerRule", id=lb["id"])
    assert await call(alice, "listLoadBalancerRules") == {}
    assert await call(alice, "listFirewallRules", ipaddressid=ip) == {}
    async with world["server"].db.sessions() as session:
        assert not (await session.scalars(select(LbMember).where(LbMember.live()))).all()


async def test_load_balancer_rule_refusals(world):
    alice, ip = world["alice"], world["ips"][1]
    base = {"name": "x", "algorithm": "source", "publicipid": ip, "privateport": 80}
    udp = await api_error(
        call(alice, "createLoadBalancerRule", publicport=53, protocol="udp", **base)
    )
    assert udp["errorcode"] == 431 and "udp" in udp["errortext"]
    bad = await api_error(
        call(
            alice,
            "createLoadBalancerRule",
            publicport=80,
            algorithm="random",
            **{k: v for k, v in base.items() if k != "algorithm"},
        )
    )
    assert bad["errorcode"] == 431 and "algorithm" in bad["errortext"]
    await call(
        alice,
        "createPortForwardingRule",
        ipaddressid=ip,
        protocol="tcp",
        publicport=2200,
        publicendport=2300,
        privateport=22,
        privateendport=122,
        virtualmachineid=world["vms"][0],
    )
    clash = await api_error(call(alice, "createLoadBalancerRule", publicport=2250, **base))
    assert clash["errorcode"] == 537 and "overlap" in clash["errortext"]
    await call(alice, "createLoadBalancerRule", publicport=443, **base)
    twice = await api_error(call(alice, "createLoadBalancerRule", publicport=444, **base))
    assert twice["errorcode"] == 431 and "named 'x'" in twice["errortext"]
    nat_ip = world["ips"][2]
    await call(alice, "enableStaticNat", ipaddressid=nat_ip, virtualmachineid=world["vms"][1])
    nat = await api_error(
        call(
            alice,
            "createLoadBalancerRule",
            publicport=80,
            **{**base, "name": "y", "publicipid": nat_ip},
        )
    )
    assert nat["errorcode"] == 537 and "static NAT" in nat["errortext"]


async def test_stickiness_and_health_check_policies(world):
    alice = world["alice"]
    lb = (
        await call(
            alice,
            "createLoadBalancerRule",
            name="web",
            algorithm="roundrobin",
            publicipid=world["ips"][1],
            publicport=80,
            privateport=80,
        )
    )["loadbalancer"]
    cookie = await api_error(
        call(alice, "createLBStickinessPolicy", lbruleid=lb["id"], methodname="LbCookie", name="c")
    )
    assert cookie["errorcode"] == 431 and "protocol http" in cookie["errortext"]
    unknown = await api_error(
        call(
            alice,
            "createLBStickinessPolicy",
            lbruleid=lb["id"],
            methodname="SourceBased",
            name="s",
            **{"param[0].name": "nocache", "param[0].value": "x"},
        )
    )
    assert "nocache" in unknown["errortext"] and "tablesize" in unknown["errortext"]
    sticky = (
        await call(
            alice,
            "createLBStickinessPolicy",
            lbruleid=lb["id"],
            methodname="SourceBased",
            name="src",
            **{
                "param[0].name": "tablesize",
                "param[0].value": "100k",
                "param[1].name": "expire",
                "param[1].value": "30m",
            },
        )
    )["stickinesspolicies"]
    [policy] = sticky["stickinesspolicy"]
    assert sticky["lbruleid"] == lb["id"] and policy["methodname"] == "SourceBased"
    assert policy["params"] == {"tablesize": "102400", "expire": "1800s"}
    assert policy["state"] == "Active"
    second = await api_error(
        call(
            alice,
            "createLBStickinessPolicy",
            lbruleid=lb["id"],
            methodname="SourceBased",
            name="again",
        )
    )
    assert second["errorcode"] == 431 and "already" in second["errortext"]
    listed = (await call(alice, "listLBStickinessPolicies", lbruleid=lb["id"]))[
        "stickinesspolicies"
    ]
    assert [p["id"] for p in listed[0]["stickinesspolicy"]] == [policy["id"]]

    slow = await api_error(
        call(
            alice, "createLBHealthCheckPolicy", lbruleid=lb["id"], intervaltime=2, responsetimeout=5
        )
    )
    assert slow["errorcode"] == 431
    assert slow["errortext"] == "health check: responsetimeout must not exceed intervaltime"
    check = (
        await call(
            alice,
            "createLBHealthCheckPolicy",
            lbruleid=lb["id"],
            pingpath="/ok",
            intervaltime=3,
            healthythreshold=1,
        )
    )["healthcheckpolicies"]
    [hc] = check["healthcheckpolicy"]
    assert (hc["pingpath"], hc["healthcheckinterval"], hc["responsetime"]) == ("/ok", 3, 2)
    bad_path = await api_error(
        call(alice, "createLBHealthCheckPolicy", lbruleid=lb["id"], pingpath="/a b")
    )
    assert bad_path["errorcode"] == 431
    await call(alice, "deleteLBHealthCheckPolicy", id=hc["id"])
    await call(alice, "deleteLBStickinessPolicy", id=policy["id"])
    async with world["server"].db.sessions() as session:
        assert not (await session.scalars(select(LbPolicy).where(LbPolicy.live()))).all()
    # Cookies work once the rule speaks HTTP; it cannot go back to tcp while they do.
    await call(alice, "updateLoadBalancerRule", id=lb["id"], protocol="http")
    await call(
        alice,
        "createLBStickinessPolicy",
        lbruleid=lb["id"],
        methodname="LbCookie",
        name="c",
        **{"param[0].name": "cookie-name", "param[0].value": "SID"},
    )
    back = await api_error(call(alice, "updateLoadBalancerRule", id=lb["id"], protocol="tcp"))
    assert back["errorcode"] == 431 and "LbCookie" in back["errortext"]
