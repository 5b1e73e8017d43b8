"""The catalogue on a live server (SKIFF_TEST_DB's database), driven by the real cs client."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command as alembic_command
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import inspect, select

from mgmt.db.engine import open_database
from mgmt.db.migrate import alembic_config, current_revision, head_revision, upgrade
from mgmt.db.models import Event
from mgmt.server.app import ManagementServer, Settings

MISSING = "00000000-0000-0000-0000-000000000000"


def admin_client(live) -> CloudStack:
    return CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                      poll_interval=0.1, fetch_result=True)


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def user_client(live, admin, name: str, **extra) -> CloudStack:
    account = (await call(admin, "createAccount", username=name, password=f"pw-{name}",
                          email=f"{name}@x.test", firstname=name, lastname="T",
                          **extra))["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    return CloudStack(live.url, key=keys["apikey"], secret=keys["secretkey"],
                      poll_interval=0.1, fetch_result=True)


async def event_types(live) -> set[str]:
    db = await open_database(live.db_url, migrate=False)
    try:
        async with db.sessions() as session:
            return set((await session.scalars(select(Event.type))).all())
    finally:
        await db.close()


async def api_error(coro) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await coro
    return err.value.error


async def test_catalog_tables_exist(db_url):
    db = await open_database(db_url, migrate=False)
    try:
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await db.close()
    assert {"os_categories", "os_types", "service_offerings", "disk_offerings",
            "network_offerings", "network_offering_services", "vpc_offerings",
            "vpc_offering_services", "templates", "template_zones"} <= tables


async def test_default_offerings_after_first_start(live):
    cs = admin_client(live)
    offerings = {o["name"]: o for o in (await call(cs, "listNetworkOfferings"))["networkoffering"]}
    default = offerings["DefaultIsolatedNetworkOfferingWithSourceNatService"]
    assert default["guestiptype"] == "Isolated" and default["state"] == "Enabled"
    assert default["isdefault"] is True and default["ispersistent"] is False
    assert default["specifyvlan"] is False and default["egressdefaultpolicy"] is False
    assert default["traffictype"] == "Guest"
    services = {s["name"]: s for s in default["service"]}
    assert set(services) == {"Dhcp", "Dns", "SourceNat", "StaticNat", "PortForwarding",
                             "Firewall", "Lb", "Vpn", "UserData"}
    assert all(s["provider"] == [{"name": "VirtualRouter"}] for s in services.values())
    caps = {c["name"]: c["value"] for c in services["SourceNat"]["capability"]}
    assert caps["RedundantRouter"] == "false"

    redundant = offerings["DefaultIsolatedNetworkOfferingWithSourceNatServiceRedundant"]
    source_nat = next(s for s in redundant["service"] if s["name"] == "SourceNat")
    assert {"name": "RedundantRouter", "value": "true",
            "canchooseservicecapability": False} in source_nat["capability"]

    vpc_tier = offerings["DefaultIsolatedNetworkOfferingForVpcNetworks"]
    assert vpc_tier["forvpc"] is True
    assert {s["name"] for s in vpc_tier["service"]} >= {"NetworkACL", "SourceNat", "Lb"}
    assert {p["name"] for s in vpc_tier["service"] for p in s["provider"]} == {"VpcVirtualRouter"}

    vpc = (await call(cs, "listVPCOfferings", name="Default VPC offering"))["vpcoffering"]
    assert vpc[0]["state"] == "Enabled" and vpc[0]["isdefault"] is True
    assert "Gateway" in {s["name"] for s in vpc[0]["service"]}

    # Filters.
    only = await call(cs, "listNetworkOfferings", isdefault=True, forvpc=True)
    assert [o["name"] for o in only["networkoffering"]] == [
        "DefaultIsolatedNetworkOfferingForVpcNetworks"]
    assert await call(cs, "listNetworkOfferings", state="Disabled") == {}
    assert await call(cs, "listNetworkOfferings", guestiptype="L2") == {}

    ostypes = (await call(cs, "listOsTypes"))["ostype"]
    by_name = {t["description"]: t for t in ostypes}
    assert {"Debian GNU/Linux 12 (64-bit)", "Ubuntu 22.04 LTS", "Other Linux (64-bit)"} <= set(
        by_name)
    categories = {c["id"]: c["name"] for c in (await call(cs, "listOsCategories"))["oscategory"]}
    assert categories[by_name["Ubuntu 22.04 LTS"]["oscategoryid"]] == "Ubuntu"

    # Another start on the same database adds nothing.
    second = ManagementServer(Settings(home=live.settings_home, port=0, db=live.db_url))
    await second.open()
    try:
        [url] = await second.listen()
        again = CloudStack(url, key=live.admin.apikey, secret=live.admin.secretkey)
        assert (await call(again, "listNetworkOfferings"))["count"] == 3
        assert (await call(again, "listVPCOfferings"))["count"] == 2
        assert (await call(again, "listOsTypes"))["count"] == len(ostypes)
    finally:
        await second.close()


async def test_service_and_disk_offering_crud(live):
    cs = admin_client(live)
    so = (await call(cs, "createServiceOffering", name="tiny", displaytext="Tiny",
                     cpunumber=1, cpuspeed=1000, memory=512, offerha=True,
                     storagetype="local", tags="ssd", hosttags="fast"))["serviceoffering"]
    assert (so["cpunumber"], so["memory"], so["offerha"], so["storagetype"]) == (
        1, 512, True, "local")
    assert so["storagetags"] == "ssd" and so["hosttags"] == "fast" and so["issystem"] is False
    listed = (await call(cs, "listServiceOfferings", id=so["id"]))["serviceoffering"]
    assert listed[0]["name"] == "tiny"
    updated = (await call(cs, "updateServiceOffering", id=so["id"], name="tiny2",
                          displaytext="Tiny 2", sortkey=5))["serviceoffering"]
    assert updated["name"] == "tiny2" and updated["displaytext"] == "Tiny 2"
    assert (await call(cs, "deleteServiceOffering", id=so["id"]))["success"] is True
    assert await call(cs, "listServiceOfferings", id=so["id"]) == {}
    err = await api_error(call(cs, "deleteServiceOffering", id=so["id"]))
    assert err["errorcode"] == 431 and so["id"] in err["errortext"]

    do = (await call(cs, "createDiskOffering", name="d10", displaytext="10 GB",
                     disksize=10, tags="ssd"))["diskoffering"]
    assert do["disksize"] == 10 and do["iscustomized"] is False and do["tags"] == "ssd"
    custom = (await call(cs, "createDiskOffering", name="any", displaytext="Any",
                         customized=True))["diskoffering"]
    assert custom["iscustomized"] is True
    err = await api_error(call(cs, "createDiskOffering", name="bad", displaytext="x"))
    assert err["errorcode"] == 431 and "disksize" in err["errortext"]
    assert (await call(cs, "updateDiskOffering", id=do["id"], name="d10b"))[
        "diskoffering"]["name"] == "d10b"
    await call(cs, "deleteDiskOffering", id=do["id"])
    names = {d["name"] for d in (await call(cs, "listDiskOfferings"))["diskoffering"]}
    assert "d10b" not in names and "any" in names and "Small" in names

    assert {"SERVICE.OFFERING.CREATE", "SERVICE.OFFERING.EDIT", "SERVICE.OFFERING.DELETE",
            "DISK.OFFERING.CREATE", "DISK.OFFERING.EDIT", "DISK.OFFERING.DELETE"} <= \
        await event_types(live)


async def test_validation_errors_name_the_parameter(live):
    cs = admin_client(live)
    err = await api_error(call(cs, "createServiceOffering", name="x", cpunumber="many"))
    assert err["errorcode"] == 431 and "cpunumber" in err["errortext"]
    err = await api_error(call(cs, "createServiceOffering", displaytext="no name"))
    assert err["errorcode"] == 431 and "name" in err["errortext"]
    err = await api_error(call(cs, "createNetworkOffering", name="n", displaytext="n",
                               guestiptype="Isolated", traffictype="GUEST",
                               supportedservices="Dhcp,Teleport"))
    assert err["errorcode"] == 431 and "supportedservices" in err["errortext"]
    assert "Teleport" in err["errortext"]
    err = await api_error(call(cs, "createNetworkOffering", name="n", displaytext="n",
                               guestiptype="Isolated", traffictype="GUEST",
                               supportedservices="Dhcp",
                               **{"serviceproviderlist[0].service": "Dns",
                                  "serviceproviderlist[0].provider": "VirtualRouter"}))
    assert "serviceproviderlist[0]" in err["errortext"] and "Dns" in err["errortext"]
    err = await api_error(call(cs, "createNetworkOffering", name="n", displaytext="n",
                               guestiptype="Isolated", traffictype="GUEST",
                               supportedservices="Dhcp",
                               **{"serviceproviderlist[0].service": "Dhcp",
                                  "serviceproviderlist[0].provider": "Nowhere"}))
    assert "serviceproviderlist[0].provider" in err["errortext"]
    err = await api_error(call(cs, "createNetworkOffering", name="n", displaytext="n",
                               guestiptype="Sideways", traffictype="GUEST"))
    assert "guestiptype" in err["errortext"]
    err = await api_error(call(cs, "listTemplates", templatefilter="mine"))
    assert err["errorcode"] == 431 and "templatefilter" in err["errortext"]
    err = await api_error(call(cs, "registerTemplate", name="t", displaytext="t",
                               url="ftp://example.test/x.qcow2", format="QCOW2",
                               hypervisor="KVM", ostypeid=MISSING, zoneid="-1"))
    assert "url" in err["errortext"]
    err = await api_error(call(cs, "deleteNetworkOffering", id=(await call(
        cs, "listNetworkOfferings",
        name="DefaultIsolatedNetworkOfferingWithSourceNatService"))["networkoffering"][0]["id"]))
    assert err["errorcode"] == 431 and "Default" in err["errortext"]


async def test_network_offering_with_provider_map_then_enabled(live):
    cs = admin_client(live)
    created = (await call(
        cs, "createNetworkOffering", name="MyIsolated", displaytext="My isolated",
        guestiptype="Isolated", traffictype="GUEST",
        supportedservices="Dhcp,Dns,SourceNat,Firewall,UserData", egressdefaultpolicy=False,
        conservemode=True, specifyvlan=False,
        **{"serviceproviderlist[0].service": "Dhcp",
           "serviceproviderlist[0].provider": "VirtualRouter",
           "serviceproviderlist[1].service": "Dns",
           "serviceproviderlist[1].provider": "VirtualRouter",
           "serviceproviderlist[2].service": "SourceNat",
           "serviceproviderlist[2].provider": "VirtualRouter",
           "serviceproviderlist[3].service": "UserData",
           "serviceproviderlist[3].provider": "ConfigDrive",
           "servicecapabilitylist[0].service": "SourceNat",
           "servicecapabilitylist[0].capabilitytype": "SupportedSourceNatTypes",
           "servicecapabilitylist[0].capabilityvalue": "perzone"}))["networkoffering"]
    assert created["state"] == "Disabled" and created["isdefault"] is False
    assert created["egressdefaultpolicy"] is False and created["conservemode"] is True
    services = {s["name"]: s for s in created["service"]}
    assert set(services) == {"Dhcp", "Dns", "SourceNat", "Firewall", "UserData"}
    assert services["UserData"]["provider"] == [{"name": "ConfigDrive"}]
    assert services["Firewall"]["provider"] == [{"name": "VirtualRouter"}]
    assert services["SourceNat"]["capability"][0]["value"] == "perzone"

    err = await api_error(call(cs, "createNetworkOffering", name="MyIsolated", displaytext="x",
                               guestiptype="Isolated", traffictype="GUEST"))
    assert err["errorcode"] == 431 and "exists" in err["errortext"]

    enabled = (await call(cs, "updateNetworkOffering", id=created["id"],
                          state="Enabled"))["networkoffering"]
    assert enabled["state"] == "Enabled"
    listed = (await call(cs, "listNetworkOfferings", state="Enabled",
                         supportedservices="UserData,Firewall"))["networkoffering"]
    assert "MyIsolated" in {o["name"] for o in listed}
    renamed = (await call(cs, "updateNetworkOffering", id=created["id"], name="Renamed",
                          displaytext="renamed"))["networkoffering"]
    assert renamed["name"] == "Renamed"

    await call(cs, "deleteNetworkOffering", id=created["id"])
    assert await call(cs, "listNetworkOfferings", id=created["id"]) == {}
    names = {o["name"] for o in (await call(cs, "listNetworkOfferings"))["networkoffering"]}
    assert "Renamed" not in names and len(names) == 3

    # VPC offerings are asynchronous, as in CloudStack.
    vpc = (await call(cs, "createVPCOffering", name="myvpc", displaytext="My VPC",
                      supportedservices="Dhcp,Dns,SourceNat,NetworkACL,Gateway"))
    vpc = vpc["vpcoffering"]
    assert vpc["state"] == "Disabled"
    assert {p["name"] for s in vpc["service"] for p in s["provider"]} == {"VpcVirtualRouter"}
    vpc = (await call(cs, "updateVPCOffering", id=vpc["id"], state="Enabled"))["vpcoffering"]
    assert vpc["state"] == "Enabled"
    assert (await call(cs, "deleteVPCOffering", id=vpc["id"]))["success"] is True
    assert await call(cs, "listVPCOfferings", id=vpc["id"]) == {}
    assert {"NETWORK.OFFERING.CREATE", "NETWORK.OFFERING.EDIT", "NETWORK.OFFERING.DELETE",
            "VPC.OFFERING.CREATE", "VPC.OFFERING.UPDATE", "VPC.OFFERING.DELETE"} <= \
        await event_types(live)


async def test_users_cannot_create_offerings_but_see_public_and_their_domains(live):
    admin = admin_client(live)
    dom = (await call(admin, "createDomain", name="shop"))["domain"]
    other = (await call(admin, "createDomain", name="elsewhere"))["domain"]
    await call(admin, "createServiceOffering", name="shop-only", displaytext="x", cpunumber=1,
               cpuspeed=500, memory=256, domainid=dom["id"])
    await call(admin, "createServiceOffering", name="elsewhere-only", displaytext="x",
               cpunumber=1, cpuspeed=500, memory=256, domainid=other["id"])
    alice = await user_client(live, admin, "alice", domainid=dom["id"])
    names = {o["name"] for o in (await call(alice, "listServiceOfferings"))["serviceoffering"]}
    assert {"Small Instance", "shop-only"} <= names and "elsewhere-only" not in names
    for name, params in (
        ("createServiceOffering", {"name": "x", "displaytext": "x"}),
        ("createDiskOffering", {"name": "x", "displaytext": "x", "disksize": 1}),
        ("createNetworkOffering", {"name": "x", "displaytext": "x", "guestiptype": "Isolated",
                                   "traffictype": "GUEST"}),
    ):
        err = await api_error(call(alice, name, **params))
        assert err["errorcode"] == 432
    # Users may read network offerings.
    assert (await call(alice, "listNetworkOfferings"))["count"] == 3


async def _register(client, name, zone, ostype, **extra):
    answer = await call(client, "registerTemplate", name=name, displaytext=name,
                        url=f"https://images.example.test/{name}.qcow2", format="QCOW2",
                        hypervisor="KVM", ostypeid=ostype, zoneid=zone, **extra)
    [template] = answer["template"]
    return template


async def test_templatefilter_semantics_across_accounts(live):
    admin = admin_client(live)
    zone = (await call(admin, "createZone", name="z1", networktype="Advanced"))["zone"]["id"]
    ostype = (await call(admin, "listOsTypes", keyword="Debian GNU/Linux 12"))["ostype"][0]["id"]
    alice = await user_client(live, admin, "alice")
    bob = await user_client(live, admin, "bob")

    featured = await _register(admin, "featured", zone, ostype, ispublic=True, isfeatured=True)
    assert featured["status"] == "Download pending" and featured["isready"] is False
    assert featured["isfeatured"] is True and featured["zoneid"] == zone
    assert featured["account"] == "admin" and featured["ostypename"].startswith("Debian")
    a_private = await _register(alice, "a-private", zone, ostype)
    a_public = await _register(alice, "a-public", zone, ostype, ispublic=True, isfeatured=True)
    assert a_public["isfeatured"] is False  # users cannot feature their templates
    b_private = await _register(bob, "b-private", zone, ostype)

    async def names(client, flt, **extra):
        answer = await call(client, "listTemplates", templatefilter=flt, **extra)
        return {t["name"] for t in answer.get("template", [])}

    assert await names(alice, "self") == {"a-private", "a-public"}
    assert await names(bob, "self") == {"b-private"}
    assert await names(bob, "featured") == {"featured"}
    assert await names(bob, "community") == {"a-public"}
    assert await names(admin, "self") == {"featured"}
    assert await names(admin, "self", listall=True) == {
        "featured", "a-private", "a-public", "b-private"}
    assert await names(admin, "all") == {"featured", "a-private", "a-public", "b-private"}
    # Nothing is downloaded yet: nothing is executable.
    assert await names(alice, "executable") == set()
    assert await names(alice, "selfexecutable") == set()
    err = await api_error(call(alice, "listTemplates", templatefilter="all"))
    assert err["errorcode"] == 431 and "all" in err["errortext"]

    # Another account's private template looks exactly like a missing one.
    for command in ("deleteTemplate", "updateTemplate"):
        hidden = await api_error(call(bob, command, id=a_private["id"], name="x"))
        missing = await api_error(call(bob, command, id=MISSING, name="x"))
        assert hidden["errorcode"] == missing["errorcode"] == 431
        assert hidden["errortext"] == f"Unable to find template with id {a_private['id']}"
        assert missing["errortext"] == f"Unable to find template with id {MISSING}"
    assert await call(bob, "listTemplates", templatefilter="self", id=a_private["id"]) == {}
    # A public one can be seen but not changed by others.
    err = await api_error(call(bob, "deleteTemplate", id=a_public["id"]))
    assert err["errorcode"] == 531

    updated = (await call(alice, "updateTemplate", id=a_private["id"], name="renamed",
                          displaytext="Renamed"))["template"]
    assert updated["name"] == "renamed"
    assert (await call(alice, "deleteTemplate", id=a_private["id"]))["success"] is True
    assert await names(alice, "self") == {"a-public"}
    assert await names(admin, "all") == {"featured", "a-public", "b-private"}
    await call(admin, "deleteTemplate", id=b_private["id"])  # the root admin may
    assert await names(bob, "self") == set()
    assert {"TEMPLATE.CREATE", "TEMPLATE.UPDATE", "TEMPLATE.DELETE"} <= await event_types(live)


async def test_isos_and_all_zones(live):
    admin = admin_client(live)
    z1 = (await call(admin, "createZone", name="z1", networktype="Advanced"))["zone"]["id"]
    z2 = (await call(admin, "createZone", name="z2", networktype="Advanced"))["zone"]["id"]
    ostype = (await call(admin, "listOsTypes", keyword="Other Linux"))["ostype"][0]["id"]
    both = await call(admin, "registerTemplate", name="everywhere", displaytext="e",
                      url="http://images.example.test/e.raw", format="RAW",
                      hypervisor="KVM", ostypeid=ostype, zoneid="-1")
    assert {t["zoneid"] for t in both["template"]} == {z1, z2}
    assert all(t["crossZones"] for t in both["template"])
    tid = both["template"][0]["id"]
    assert (await call(admin, "listTemplates", templatefilter="all", zoneid=z2))["count"] == 1
    await call(admin, "deleteTemplate", id=tid, zoneid=z1)
    left = (await call(admin, "listTemplates", templatefilter="all", id=tid))["template"]
    assert [t["zoneid"] for t in left] == [z2]

    alice = await user_client(live, admin, "alice")
    iso = (await call(alice, "registerIso", name="rescue", displaytext="Rescue",
                      url="https://images.example.test/rescue.iso", ostypeid=ostype,
                      zoneid=z1, bootable=True))["iso"][0]
    assert iso["bootable"] is True and iso["status"] == "Download pending"
    assert "format" not in iso
    assert (await call(alice, "listIsos", isofilter="self"))["iso"][0]["id"] == iso["id"]
    # An ISO is not a template, and the other way round.
    assert await call(alice, "listTemplates", templatefilter="self") == {}
    err = await api_error(call(alice, "deleteTemplate", id=iso["id"]))
    assert err["errortext"] == f"Unable to find template with id {iso['id']}"
    bob = await user_client(live, admin, "bob")
    err = await api_error(call(bob, "deleteIso", id=iso["id"]))
    assert err["errortext"] == f"Unable to find iso with id {iso['id']}"
    await call(alice, "deleteIso", id=iso["id"])
    assert await call(alice, "listIsos", isofilter="self") == {}


def _downgrade_to_0002(connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.downgrade(config, "0002")


async def test_revision_0003_downgrades_and_upgrades_again(db_url):
    db = await open_database(db_url, migrate=False)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0002)
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "templates" not in tables and "network_offerings" not in tables
        assert await current_revision(db.engine) == "0002"
        await upgrade(db.engine)
        assert await current_revision(db.engine) == head_revision()
    finally:
        await db.close()
