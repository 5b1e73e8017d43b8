"""Templates and ISOs through a real storage appliance, driven with the cs client.

A live server (SKIFF_TEST_DB's database) and, for each zone, ``skiff agent --role
storage`` in a process of its own on loopback, reached over mutual TLS with a
certificate from the server's CA; the images come from an HTTP server in this
process that can cut a connection. What counts is what arrives: the status
listTemplates shows, the bytes in the appliance's store, what a browser's POST
and an extract URL's GET get.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import select
from storage_agents import DirectSite, start_agent

from mgmt.db.models.catalog import Template, TemplateZone
from mgmt.orchestration import storage_images
from tests.storage import fileserver
from tests.storage import imagefiles as img

MiB = 1 << 20
SETTLED = ("DOWNLOADED", "DOWNLOAD_ERROR", "UPLOAD_ERROR", "ABANDONED")


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def api_error(coro) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await coro
    return err.value.error


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
async def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    img.qcow2(root / "disk.qcow2", "64M")
    img.raw(root / "big.img", 3 * MiB + 5, fill=os.urandom(4096))
    img.qcow2_with_backing(root / "child.qcow2", img.raw(tmp_path / "base.img"))
    img.iso_by_hand(root / "cd.iso")
    srv, runner, port = await fileserver.start(root)
    srv.url = lambda name: f"http://127.0.0.1:{port}/{name}"
    yield srv
    await runner.cleanup()


@pytest.fixture
async def cloud(live, tmp_path):
    """The live server with a DirectSite, an admin client, fast status reads and loopback
    image servers allowed; ``cloud.zone(name)`` makes a zone with its own appliance."""
    site = DirectSite()
    live.orchestrator.storage_site = site
    admin = CloudStack(
        live.url,
        key=live.admin.apikey,
        secret=live.admin.secretkey,
        poll_interval=0.1,
        fetch_result=True,
    )
    for name, value in (
        ("template.status.interval", "0.2"),
        ("secstorage.allowed.internal.sites", "127.0.0.0/8"),
    ):
        await call(admin, "updateConfiguration", name=name, value=value)
    agents = []

    async def zone(name: str, appliance: bool = True) -> dict:
        made = (await call(admin, "createZone", name=name, networktype="Advanced"))["zone"]
        if appliance:
            agent = await start_agent(live.orchestrator, tmp_path / f"ssvm-{name}", f"s-{name}-VM")
            agents.append(agent)
            await site.attach(live.orchestrator, await zone_id(live, made["id"]), agent)
            made["agent"] = agent
        return made

    ostype = (await call(admin, "listOsTypes", keyword="Debian GNU/Linux 12"))["ostype"][0]
    live.site, live.admin_client, live.new_zone, live.ostype = site, admin, zone, ostype["id"]
    yield live
    for agent in agents:
        await agent.stop()


async def zone_id(live, uuid: str) -> int:
    from mgmt.db.models import Zone

    async with live.db.sessions() as session:
        return await session.scalar(select(Zone.id).where(Zone.uuid == uuid))


def state(t: dict) -> str:
    return t["downloaddetails"][0]["downloadState"]


async def settled(
    client, kind: str, template_id: str, zone: str | None = None, done=lambda t: state(t) in SETTLED
) -> dict:
    """The template's listing once ``done`` holds (bounded: the appliance works in the
    background)."""
    command = "listTemplates" if kind == "template" else "listIsos"
    flt = {"templatefilter": "self"} if kind == "template" else {"isofilter": "self"}
    extra = {"zoneid": zone} if zone else {}
    seen = None
    for _ in range(600):
        found = (await call(client, command, id=template_id, **flt, **extra)).get(kind, [])
        if found:
            seen = found[0]
            if done(seen):
                return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"{kind} {template_id} did not settle: {seen}")


def failed(t: dict) -> bool:
    return state(t) in ("DOWNLOAD_ERROR", "UPLOAD_ERROR")


async def register(client, zone, name, url, fmt="QCOW2", **extra) -> dict:
    answer = await call(
        client,
        "registerTemplate",
        name=name,
        displaytext=name,
        url=url,
        format=fmt,
        hypervisor="KVM",
        ostypeid=extra.pop("ostypeid"),
        zoneid=zone["id"],
        **extra,
    )
    return answer["template"][0]


async def test_downloads_verified_resumed_refused_extracted_and_deleted(cloud, web):
    admin, ostype = cloud.admin_client, cloud.ostype
    z1 = await cloud.new_zone("z1")
    www = web.root

    good = await register(
        admin,
        z1,
        "good",
        web.url("disk.qcow2"),
        ostypeid=ostype,
        checksum="{SHA-256}" + sha256(www / "disk.qcow2"),
        isextractable=True,
    )
    assert good["status"] == "Download pending" and good["isready"] is False
    wrong = await register(
        admin,
        z1,
        "wrongsum",
        web.url("big.img"),
        "RAW",
        ostypeid=ostype,
        checksum="{MD5}" + "0" * 32,
    )
    resumed = await register(
        admin,
        z1,
        "resumed",
        web.url("big.img?cut=once"),
        "RAW",
        ostypeid=ostype,
        checksum=sha256(www / "big.img"),
    )
    backing = await register(admin, z1, "backing", web.url("child.qcow2"), ostypeid=ostype)
    isoasqcow = await register(admin, z1, "isoasqcow", web.url("cd.iso"), ostypeid=ostype)
    iso = (
        await call(
            admin,
            "registerIso",
            name="cd",
            displaytext="cd",
            url=web.url("cd.iso"),
            ostypeid=ostype,
            zoneid=z1["id"],
            isextractable=True,
        )
    )["iso"][0]

    done = await settled(admin, "template", good["id"])
    size = (www / "disk.qcow2").stat().st_size
    assert (done["status"], done["isready"]) == ("Download Complete", True)
    assert (done["size"], done["physicalsize"]) == (64 * MiB, size)
    assert done["downloaddetails"][0]["downloadState"] == "DOWNLOADED"
    assert done["downloaddetails"][0]["downloadPercent"] == "100"
    agent = z1["agent"]
    tz_ids = await image_ids(cloud, good["id"])
    assert (agent.store / f"{tz_ids[0]}.qcow2").read_bytes() == (www / "disk.qcow2").read_bytes()

    bad = await settled(admin, "template", wrong["id"], done=failed)
    assert bad["status"].startswith("checksum mismatch: declared {MD5}000") and not bad["isready"]
    ok = await settled(admin, "template", resumed["id"])
    assert ok["isready"] is True and ok["physicalsize"] == 3 * MiB + 5
    ranges = [r for path, r in web.requests if path.startswith("/big.img?cut=once")]
    assert ranges[0] is None and ranges[-1] and ranges[-1].startswith("bytes=")  # it resumed
    refused = await settled(admin, "template", backing["id"], done=failed)
    assert "backing file" in refused["status"] and refused["isready"] is False
    refused = await settled(admin, "template", isoasqcow["id"], done=failed)
    assert refused["status"] == "declared QCOW2 but the content is an ISO image"
    cd = await settled(admin, "iso", iso["id"])
    assert cd["isready"] is True and cd["status"] == "Download Complete"

    # Only what is ready is executable.
    names = {
        t["name"]
        for t in (await call(admin, "listTemplates", templatefilter="selfexecutable"))["template"]
    }
    assert names == {"good", "resumed"}

    # Extract: the URL serves the image; one signed in the past is refused.
    extracted = (
        await call(admin, "extractTemplate", id=good["id"], mode="HTTP_DOWNLOAD", zoneid=z1["id"])
    )["template"]
    assert extracted["state"] == "DOWNLOAD_URL_CREATED" and extracted["zoneid"] == z1["id"]
    assert extracted["url"].startswith(agent.public_url + "/extract/")
    status, body = await fetch(extracted["url"])
    assert status == 200 and body == (www / "disk.qcow2").read_bytes()
    iso_url = (await call(admin, "extractIso", id=iso["id"], mode="HTTP_DOWNLOAD"))["iso"]["url"]
    assert (await fetch(iso_url))[1] == (www / "cd.iso").read_bytes()
    with moved_clock(-7 * 86400):
        old = (await call(admin, "extractTemplate", id=good["id"], mode="HTTP_DOWNLOAD"))[
            "template"
        ]["url"]
    status, body = await fetch(old)
    assert status == 403 and b"expired" in body
    err = await api_error(call(admin, "extractTemplate", id=wrong["id"], mode="HTTP_DOWNLOAD"))
    assert err["errorcode"] == 431 and "not ready" in err["errortext"]

    # Delete: gone from listings at once, from the appliance's store once it confirms.
    await call(admin, "deleteTemplate", id=good["id"])
    assert await call(admin, "listTemplates", templatefilter="self", id=good["id"]) == {}
    await until(lambda: rows_gone(cloud, tz_ids), "the row waits for the appliance")
    assert not [f for f in agent.stored_files() if f.startswith(tz_ids[0])]
    status, _ = await fetch(extracted["url"])
    assert status == 404


async def test_browser_upload_signed_forged_expired_and_abandoned(cloud):
    admin, ostype = cloud.admin_client, cloud.ostype
    z1 = await cloud.new_zone("z1")
    data = Path(img.qcow2(cloud.settings_home.parent / "up.qcow2", "32M")).read_bytes()
    params = (
        await call(
            admin,
            "getUploadParamsForTemplate",
            name="up",
            displaytext="up",
            format="QCOW2",
            hypervisor="KVM",
            ostypeid=ostype,
            zoneid=z1["id"],
            checksum=hashlib.sha256(data).hexdigest(),
        )
    )["getuploadparams"]
    assert params["postURL"].startswith(z1["agent"].public_url + "/upload/")
    waiting = await settled(
        admin, "template", params["id"], done=lambda t: t["status"] == "NotUploaded"
    )
    assert waiting["isready"] is False

    forged = {**params, "signature": params["signature"][:-4] + "AAA="}
    status, text = await post(forged, data)
    assert status == 403 and "signature" in text
    status, text = await post(params, data)
    assert (status, text.strip()) == (200, "upload successful")
    done = await settled(admin, "template", params["id"])
    assert (done["status"], done["isready"], done["size"]) == ("Download Complete", True, 32 * MiB)

    # Signed in the past: refused by the appliance, and abandoned on the server.
    with moved_clock(-7 * 86400):
        old = (
            await call(
                admin,
                "getUploadParamsForIso",
                name="late",
                displaytext="late",
                ostypeid=ostype,
                zoneid=z1["id"],
            )
        )["getuploadparams"]
    status, text = await post(
        old, img.iso_by_hand(cloud.settings_home.parent / "l.iso").read_bytes()
    )
    assert status == 403 and "expired" in text
    late = await settled(admin, "iso", old["id"])
    assert (late["status"], late["isready"]) == ("UploadAbandoned", False)

    err = await api_error(
        call(
            admin,
            "getUploadParamsForTemplate",
            name="x",
            displaytext="x",
            format="QCOW2",
            hypervisor="KVM",
            ostypeid=ostype,
            zoneid="-1",
        )
    )
    assert err["errorcode"] == 431 and "one zone" in err["errortext"]
    nowhere = await cloud.new_zone("z2", appliance=False)
    err = await api_error(
        call(
            admin,
            "getUploadParamsForTemplate",
            name="x",
            displaytext="x",
            format="QCOW2",
            hypervisor="KVM",
            ostypeid=ostype,
            zoneid=nowhere["id"],
        )
    )
    assert err["errorcode"] == 534 and "no secondary storage VM" in err["errortext"]


async def test_copy_between_zones_and_who_may_extract(cloud, web):
    ostype = cloud.ostype
    z1, z2 = await cloud.new_zone("z1"), await cloud.new_zone("z2")
    alice = await user(cloud, "alice")
    bob = await user(cloud, "bob")
    private = await register(alice, z1, "private", web.url("disk.qcow2"), ostypeid=ostype)
    public = await register(
        alice, z1, "public", web.url("big.img"), "RAW", ostypeid=ostype, ispublic=True
    )
    await settled(alice, "template", private["id"])
    await settled(alice, "template", public["id"])

    copied = (
        await call(
            alice, "copyTemplate", id=private["id"], sourcezoneid=z1["id"], destzoneid=z2["id"]
        )
    )["template"]
    assert copied["zoneid"] == z2["id"] and copied["isready"] is False
    there = await settled(alice, "template", private["id"], zone=z2["id"])
    assert there["isready"] is True and there["size"] == 64 * MiB
    [tz1, tz2] = await image_ids(cloud, private["id"])
    assert (z2["agent"].store / f"{tz2}.qcow2").read_bytes() == (
        web.root / "disk.qcow2"
    ).read_bytes()
    err = await api_error(call(alice, "copyTemplate", id=private["id"], destzoneid=z2["id"]))
    assert err["errorcode"] == 431 and "already in zone z2" in err["errortext"]

    # The owner extracts her non-extractable template; bob sees neither that one nor a
    # difference from a missing id, and may not extract the public, non-extractable one.
    mine = (
        await call(
            alice, "extractTemplate", id=private["id"], mode="HTTP_DOWNLOAD", zoneid=z2["id"]
        )
    )["template"]
    assert (await fetch(mine["url"]))[0] == 200
    hidden = await api_error(call(bob, "extractTemplate", id=private["id"], mode="HTTP_DOWNLOAD"))
    assert hidden["errortext"] == f"Unable to find template with id {private['id']}"
    refused = await api_error(call(bob, "extractTemplate", id=public["id"], mode="HTTP_DOWNLOAD"))
    assert refused["errorcode"] == 431 and "not extractable" in refused["errortext"]
    refused = await api_error(call(bob, "copyTemplate", id=public["id"], destzoneid=z2["id"]))
    assert refused["errorcode"] == 531

    # Deleting from one zone leaves the other; the appliance there drops the file.
    await call(alice, "deleteTemplate", id=private["id"], zoneid=z2["id"])
    left = await call(alice, "listTemplates", templatefilter="self", id=private["id"])
    assert [t["zoneid"] for t in left["template"]] == [z1["id"]]
    await until(lambda: rows_gone(cloud, [tz2]), "z2's row waits for its appliance")
    assert not [f for f in z2["agent"].stored_files() if f.startswith(tz2)]
    assert [f for f in z1["agent"].stored_files() if f.startswith(tz1)]


async def test_without_an_appliance_the_template_waits_and_says_why(cloud):
    admin, ostype = cloud.admin_client, cloud.ostype
    z9 = await cloud.new_zone("z9", appliance=False)
    waiting = await register(
        admin, z9, "later", "http://images.example.test/later.qcow2", ostypeid=ostype
    )
    seen = await settled(
        admin, "template", waiting["id"], done=lambda t: t["status"] != "Download pending"
    )
    assert seen["status"] == "Download pending: no secondary storage VM is running in zone z9"
    assert seen["isready"] is False
    await call(admin, "deleteTemplate", id=waiting["id"])  # nothing stored: gone at once
    assert await rows_gone(cloud, await image_ids(cloud, waiting["id"], live=False))
    for url, why in (
        ("http://127.0.0.1:1/x", None),
        ("http://169.254.0.9/x", "169.254.0.9"),
        ("http://u:p@images.example.test/x", "credentials"),
        ("https://[::1]/x", "IPv6"),
    ):
        if why is None:  # loopback is allowed here: secstorage.allowed.internal.sites
            await register(admin, z9, "loop", url, ostypeid=ostype)
            continue
        err = await api_error(register(admin, z9, "x", url, ostypeid=ostype))
        assert err["errorcode"] == 431 and why in err["errortext"], err
    err = await api_error(
        register(
            admin,
            z9,
            "x",
            "http://images.example.test/x",
            ostypeid=ostype,
            checksum="{SHA-256}" + "a" * 40,
        )
    )
    assert "checksum" in err["errortext"] and "64 hex digits" in err["errortext"]
    err = await api_error(
        register(admin, z9, "x", "http://images.example.test/x", "VMDK", ostypeid=ostype)
    )
    assert err["errorcode"] == 431 and "format" in err["errortext"]


# -- helpers -----------------------------------------------------------------------------


async def user(cloud, name: str) -> CloudStack:
    admin = cloud.admin_client
    account = (
        await call(
            admin,
            "createAccount",
            username=name,
            password=f"pw-{name}",
            email=f"{name}@x.test",
            firstname=name,
            lastname="T",
        )
    )["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    return CloudStack(
        cloud.url,
        key=keys["apikey"],
        secret=keys["secretkey"],
        poll_interval=0.1,
        fetch_result=True,
    )


async def image_ids(cloud, template_uuid: str, live: bool = True) -> list[str]:
    """The template's image ids (template_zones uuids), in row order."""
    async with cloud.db.sessions() as session:
        query = (
            select(TemplateZone.uuid)
            .join(Template, Template.id == TemplateZone.template_id)
            .where(Template.uuid == template_uuid)
            .order_by(TemplateZone.id)
        )
        if live:
            query = query.where(TemplateZone.live())
        return list((await session.scalars(query)).all())


async def rows_gone(cloud, image_ids_: list[str]) -> bool:
    async with cloud.db.sessions() as session:
        left = await session.scalars(
            select(TemplateZone.uuid).where(TemplateZone.uuid.in_(image_ids_), TemplateZone.live())
        )
        return not left.all()


async def until(check, what: str) -> None:
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


async def post(params: dict, data: bytes) -> tuple[int, str]:
    """A browser's upload: multipart/form-data with the signed headers."""
    form = aiohttp.FormData()
    form.add_field("files[]", data, filename="image", content_type="application/octet-stream")
    headers = {
        "X-signature": params["signature"],
        "X-metadata": params["metadata"],
        "X-expires": params["expires"],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(params["postURL"], data=form, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


@contextlib.contextmanager
def moved_clock(offset: float):
    """Signatures and expiries made as if the wall clock stood ``offset`` seconds off."""
    real = storage_images.now
    storage_images.now = lambda: real() + offset
    try:
        yield
    finally:
        storage_images.now = real
