"""What the server makes of a storage appliance's report, and the document's image list.

``observe`` is pure: rows and items are built here. ``storage_images`` and
``upload_key`` run on SKIFF_TEST_DB's database.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest
from alembic import command as alembic_command
from sqlalchemy import select, text

from appliances.storage.document import StorageDocument
from mgmt.db.bootstrap import bootstrap
from mgmt.db.engine import open_database
from mgmt.db.migrate import alembic_config, current_revision, head_revision, upgrade
from mgmt.db.models import Account, Zone
from mgmt.db.models.catalog import OsType, Template, TemplateZone
from mgmt.db.models.compute import KeystoreEntry
from mgmt.db.types import utcnow
from mgmt.orchestration import image_status as st
from mgmt.orchestration.storage_images import image_entry, storage_images, upload_key

SHA = "{SHA-256}" + "ab" * 32
NOW = utcnow()


def template(fmt="QCOW2", checksum=SHA, url="http://images.example.test/t.qcow2"):
    return Template(name="t", format=fmt, checksum=checksum, url=url)


def row(**kw):
    fields = {
        "uuid": "img-1",
        "source": "download",
        "attempt": 0,
        "deleting": False,
        "url": None,
        "checksum": None,
        "download_state": st.NOT_DOWNLOADED,
        "upload_expires": None,
    } | kw
    return TemplateZone(**fields)


def item(state, **kw):
    base = {
        "id": "img-1",
        "format": "QCOW2",
        "source": "download",
        "state": state,
        "percent": 0,
        "declared_checksum": SHA,
        "attempt": 0,
        "error": None,
        "checksum": None,
        "virtual_size": None,
        "physical_size": None,
    }
    return base | kw


def seen(tz, t, it, store_open=True, now=NOW):
    return st.observe(tz, t, it, store_open=store_open, now=now)


def test_progress_and_completion_read_as_cloudstack_shows_them():
    t = template()
    assert seen(row(), t, item("Queued")).fields["status"] == "Download pending"
    going = seen(row(), t, item("Downloading", percent=45)).fields
    assert (going["status"], going["download_state"], going["download_percent"]) == (
        "45% Downloaded",
        st.DOWNLOAD_IN_PROGRESS,
        45,
    )
    # All bytes in, still being verified: not ready, and it says so.
    assert seen(row(), t, item("Downloading", percent=100)).fields["status"] == (
        "Installing Template"
    )
    done = seen(
        row(), t, item("Downloaded", percent=100, checksum=SHA, virtual_size=64, physical_size=7)
    ).fields
    assert done["is_ready"] is True and done["status"] == "Download Complete"
    assert (done["size"], done["physical_size"], done["stored_checksum"]) == (64, 7, SHA)
    failed = seen(row(), t, item("Error", error="HTTP 404 Not Found from http://x")).fields
    assert failed["status"] == "HTTP 404 Not Found from http://x" and not failed["is_ready"]


def test_nothing_unverified_is_ever_ready():
    t = template()
    other = "{SHA-256}" + "cd" * 32
    wrong = seen(row(), t, item("Downloaded", checksum=other, physical_size=7)).fields
    assert wrong["is_ready"] is False and wrong["download_state"] == st.DOWNLOAD_ERROR
    assert wrong["status"].startswith("checksum mismatch: declared {SHA-256}abab")
    as_raw = seen(row(), t, item("Downloaded", format="RAW", checksum=SHA, physical_size=7))
    assert as_raw.action == "push"  # another format: the appliance must fetch it anew
    no_sum = seen(row(), t, item("Downloaded", checksum=None, physical_size=7))
    assert no_sum.fields["is_ready"] is False
    # Without a declared checksum, what the appliance stored and hashed is enough.
    bare = template(checksum=None)
    ok = seen(
        row(), bare, item("Downloaded", declared_checksum=None, checksum=SHA, physical_size=7)
    )
    assert ok.fields["is_ready"] is True


def test_an_item_from_an_older_document_asks_for_a_push():
    t = template()
    assert seen(row(), t, None).action == "push"
    assert seen(row(), t, item("Downloaded", declared_checksum=None)).action == "push"
    assert seen(row(), t, item("AwaitingUpload", source="upload")).action == "push"
    assert seen(row(attempt=1), t, item("Error", attempt=0)).action == "push"
    # A stored image read back after a restart has attempt 0: that is not stale.
    back = seen(row(attempt=1), t, item("Downloaded", checksum=SHA, physical_size=1))
    assert back.action == "update" and back.fields["is_ready"] is True


def test_deletion_waits_for_the_appliance():
    t = template()
    gone = row(deleting=True)
    assert seen(gone, t, item("Deleted")).action == "remove"
    assert seen(gone, t, item("Downloaded")).action == "push"
    assert seen(gone, t, None).action == "remove"
    assert seen(gone, t, None, store_open=False).action == "keep"


def test_uploads_wait_then_are_abandoned():
    t = template(url=None)
    up = row(
        source="upload", download_state=st.NOT_UPLOADED, upload_expires=NOW + timedelta(minutes=5)
    )
    waiting = item("AwaitingUpload", source="upload")
    assert seen(up, t, waiting).fields["status"] == "NotUploaded"
    arriving = seen(up, t, item("Uploading", source="upload", percent=30)).fields
    assert arriving["status"] == "UploadInProgress" and arriving["download_percent"] == 30
    later = NOW + timedelta(minutes=6)
    assert seen(up, t, waiting, now=later).fields["status"] == "UploadAbandoned"
    assert seen(up, t, None, now=later).fields["download_state"] == st.ABANDONED
    # Bytes that started arriving in time still count.
    assert (
        seen(up, t, item("Uploading", source="upload"), now=later).fields["download_state"]
        == st.UPLOAD_IN_PROGRESS
    )
    failed = seen(up, t, item("Error", source="upload", error="upload failed")).fields
    assert failed["download_state"] == st.UPLOAD_ERROR


def test_a_row_the_appliance_cannot_take_fails_alone():
    entry, problem = image_entry(row(), template(fmt="VMDK"))
    assert entry is None and "VMDK is not supported" in problem
    assert seen(row(), template(fmt="VMDK"), None).fields["download_state"] == st.DOWNLOAD_ERROR
    entry, problem = image_entry(row(), template(url="ftp://x/y"))
    assert entry is None and problem.startswith("the secondary storage appliance cannot take")
    # Deleting it still works: only its id matters then.
    entry, _ = image_entry(row(deleting=True), template(fmt="VMDK"))
    assert entry == {"id": "img-1", "format": "RAW", "state": "absent", "attempt": 0}


async def test_storage_images_is_a_valid_document_list_and_the_key_is_shared(db, tmp_path):
    await bootstrap(db, tmp_path)
    async with db.sessions() as session:
        account = await session.scalar(select(Account).limit(1))
        os_type = await session.scalar(select(OsType.id).limit(1))
        z1, z2 = Zone(name="z1", network_type="Advanced"), Zone(name="z2", network_type="Advanced")
        session.add_all([z1, z2])
        await session.flush()

        def new(name, fmt="QCOW2", url="http://images.example.test/a.qcow2", checksum=None):
            t = Template(
                name=name,
                display_text=name,
                format=fmt,
                url=url,
                checksum=checksum,
                os_type_id=os_type,
                account_id=account.id,
                domain_id=account.domain_id,
            )
            session.add(t)
            return t

        a, b, c, iso = new("a", checksum="AB" * 32), new("b"), new("c", "VMDK"), new("i", "ISO")
        await session.flush()
        rows = [
            TemplateZone(template_id=a.id, zone_id=z1.id),
            TemplateZone(template_id=b.id, zone_id=z1.id, deleting=True),
            TemplateZone(template_id=c.id, zone_id=z1.id),
            TemplateZone(template_id=iso.id, zone_id=z1.id, source="upload"),
            TemplateZone(
                template_id=a.id,
                zone_id=z2.id,
                source="copy",
                url="http://203.0.113.9/extract/tok",
                checksum="{MD5}" + "0" * 32,
                attempt=2,
            ),
        ]
        session.add_all(rows)
        gone = TemplateZone(template_id=b.id, zone_id=z2.id)
        session.add(gone)
        await session.flush()
        gone.remove()
        await session.commit()
        images = await storage_images(session, z1)
        copies = await storage_images(session, z2.id)
    assert [i["id"] for i in images] == [rows[0].uuid, rows[1].uuid, rows[3].uuid]
    assert images[0] == {
        "id": rows[0].uuid,
        "format": "QCOW2",
        "state": "present",
        "attempt": 0,
        "name": "a",
        "url": "http://images.example.test/a.qcow2",
        "checksum": "{SHA-256}" + "ab" * 32,
    }
    assert images[1]["state"] == "absent"
    assert "url" not in images[2] and images[2]["format"] == "ISO"
    assert copies == [
        {
            "id": rows[4].uuid,
            "format": "QCOW2",
            "state": "present",
            "attempt": 2,
            "name": "a",
            "url": "http://203.0.113.9/extract/tok",
            "checksum": "{MD5}" + "0" * 32,
        }
    ]
    doc = StorageDocument.model_validate(
        {
            "appliance_id": "s-1-VM",
            "generation": 1,
            "store": {"path": "/srv/store"},
            "images": images,
        }
    )
    assert len(doc.images) == 3

    orch = SimpleNamespace(db=db)
    keys = await asyncio.gather(*(upload_key(orch, z1.id) for _ in range(4)))
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert await upload_key(orch, z2) != keys[0]  # each zone its own
    async with db.sessions() as session:  # the row the system VMs' documents read
        assert (
            await session.scalar(
                select(KeystoreEntry.private_key).where(
                    KeystoreEntry.name == f"storage-transfer-key:{z1.uuid}"
                )
            )
            == keys[0].decode()
        )
    StorageDocument.model_validate(
        {
            "appliance_id": "s",
            "generation": 0,
            "store": {"path": "/srv/s"},
            "transfer": {"address": "0.0.0.0", "key": keys[0].decode()},
        }
    )


@pytest.mark.parametrize(
    ("state", "percent", "error", "text"),
    [
        (st.NOT_DOWNLOADED, 0, None, "Download pending"),
        (st.DOWNLOAD_IN_PROGRESS, 99, None, "99% Downloaded"),
        (st.DOWNLOADED, 100, None, "Download Complete"),
        (st.DOWNLOAD_ERROR, 3, " checksum mismatch\n", "checksum mismatch"),
        (st.ABANDONED, 0, None, "UploadAbandoned"),
    ],
)
def test_status_text(state, percent, error, text):
    assert st.status_text(state, percent, error) == text


def _downgrade_to_0008(connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.downgrade(config, "0008")


async def test_revision_0010_keeps_registered_templates_pending(db_url, tmp_path):
    db = await open_database(db_url, migrate=False)
    try:
        await bootstrap(db, tmp_path)
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0008)
            await conn.execute(
                text(
                    "INSERT INTO zones (name, network_type, allocation_state, uuid, created) "
                    "VALUES ('z', 'Advanced', 'Enabled', 'zone-uuid', CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO templates (name, display_text, url, format, os_type_id, "
                    "is_public, is_featured, is_extractable, password_enabled, requires_hvm, "
                    "bootable, cross_zones, template_type, sort_key, account_id, domain_id, uuid, "
                    "created) SELECT 't', 't', 'http://images.example.test/t.qcow2', 'QCOW2', "
                    "(SELECT min(id) FROM os_types), false, false, false, false, true, true, "
                    "false, 'USER', 0, a.id, a.domain_id, 'tpl-uuid', CURRENT_TIMESTAMP "
                    "FROM accounts a ORDER BY a.id LIMIT 1"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO template_zones (template_id, zone_id, status, is_ready, uuid, "
                    "created) SELECT t.id, z.id, 'Download pending', false, 'tz-uuid', "
                    "CURRENT_TIMESTAMP FROM templates t, zones z"
                )
            )
        assert await current_revision(db.engine) == "0008"
        await upgrade(db.engine)
        assert await current_revision(db.engine) == head_revision()
        async with db.sessions() as session:
            tz = await session.scalar(select(TemplateZone).where(TemplateZone.uuid == "tz-uuid"))
            assert (tz.download_state, tz.download_percent, tz.source, tz.attempt) == (
                st.NOT_DOWNLOADED,
                0,
                "download",
                0,
            )
            assert tz.deleting is False and tz.url is None
            [entry] = await storage_images(session, tz.zone_id)
            assert entry["url"] == "http://images.example.test/t.qcow2"
    finally:
        await db.close()
