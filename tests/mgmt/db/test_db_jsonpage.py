"""Listings the database renders to JSON: the same objects Python would build, on
SQLite and PostgreSQL; pages in order, with the total; null members dropped."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from mgmt.api.envelope import ListResult, RawJson, body_of, render
from mgmt.commands.common import date
from mgmt.db.engine import Database
from mgmt.db.jobs import create_job
from mgmt.db.jsonpage import JsonArray, JsonConst, JsonField, JsonShape, json_page, outer
from mgmt.db.models import Account, AsyncJob, Zone
from mgmt.db.models.misc import ResourceTag
from mgmt.db.types import utcnow

SHAPE = JsonShape(
    JsonField("id", AsyncJob.uuid),
    JsonField("cmd", AsyncJob.cmd),
    JsonField("status", AsyncJob.status, "int"),
    JsonField("resumable", AsyncJob.resumable, "bool"),
    JsonField("created", AsyncJob.created, "date"),
    JsonField("completed", AsyncJob.completed, "date"),
    JsonField("instancetype", AsyncJob.instance_type),
    JsonField("result", AsyncJob.result, "json"),
)

#: Quotes, a backslash, a control character and non-ASCII text, as a user might name things.
AWKWARD = 'say "hi" \\ tab\there ünï 漢字 </x>'


def expected(job: AsyncJob) -> dict:
    """What Python would have built: None members left out."""
    fields = {
        "id": job.uuid,
        "cmd": job.cmd,
        "status": job.status,
        "resumable": job.resumable,
        "created": date(job.created),
        "completed": date(job.completed),
        "instancetype": job.instance_type,
        "result": json.loads(job.result) if job.result else None,
    }
    return {k: v for k, v in fields.items() if v is not None}


async def _jobs(db: Database, count: int) -> list[AsyncJob]:
    """``count`` jobs; every other one finished, with a result and a completion date."""
    async with db.sessions() as session, session.begin():
        for i in range(count):
            job = await create_job(
                session,
                cmd=AWKWARD if i == 0 else f"cmd{i}",
                kind="k",
                params={},
                user_id=None,
                account_id=None,
                resumable=bool(i % 3),
                instance_type="VirtualMachine" if i % 2 else None,
            )
            if i % 2:
                job.status = 1
                job.completed = utcnow() + timedelta(seconds=i)
                job.result = json.dumps({"vm": {"name": f"vm-{i}", "gone": None, "n": i}})
    async with db.sessions() as session:
        return list((await session.scalars(select(AsyncJob).order_by(AsyncJob.id))).all())


async def _page(db: Database, window: tuple[int, int] | None):
    async with db.sessions() as session:
        return await json_page(session, select(AsyncJob.id), SHAPE, window, order_by=[AsyncJob.id])


async def test_every_row_renders_as_python_would(db: Database) -> None:
    jobs = await _jobs(db, 7)
    page = await _page(db, None)
    assert page.count == 7
    # Embedded JSON stays as it was stored, nulls and all.
    assert json.loads(page.items) == [expected(j) for j in jobs]
    first = json.loads(page.items)[0]
    assert first["cmd"] == AWKWARD and "completed" not in first and "result" not in first
    assert first["resumable"] is False and isinstance(first["status"], int)


async def test_a_window_is_that_slice_in_order_with_the_total(db: Database) -> None:
    jobs = await _jobs(db, 7)
    page = await _page(db, (3, 3))
    assert [o["id"] for o in json.loads(page.items)] == [j.uuid for j in jobs[3:6]]
    assert page.count == 7
    beyond = await _page(db, (3, 9))
    assert (beyond.items, beyond.count) == ("[]", 7)


async def test_the_filter_applies_to_rows_and_count(db: Database) -> None:
    jobs = await _jobs(db, 6)
    async with db.sessions() as session:
        page = await json_page(
            session,
            select(AsyncJob.id).where(AsyncJob.status == 1),
            SHAPE,
            (2, 0),
            order_by=[AsyncJob.id.desc()],
        )
    finished = [j.uuid for j in reversed(jobs) if j.status == 1]
    assert [o["id"] for o in json.loads(page.items)] == finished[:2]
    assert page.count == len(finished)


async def test_a_row_changed_later_shows_its_new_values(db: Database) -> None:
    jobs = await _jobs(db, 2)
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(AsyncJob).where(AsyncJob.id == jobs[0].id).values(instance_type="Network")
        )
    assert json.loads((await _page(db, None)).items)[0]["instancetype"] == "Network"


def test_field_names_are_plain_identifiers() -> None:
    with pytest.raises(ValueError, match="not a field name"):
        JsonField('x","y', AsyncJob.uuid)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_rendered_page_in_both_envelopes(fmt: str) -> None:
    items = RawJson('[{"id":"a","name":"x<y"},{"id":"b"}]')
    body, _ = render("listThings", body_of(ListResult("thing", items, 12)), fmt)
    if fmt == "json":
        assert json.loads(body) == {
            "listthingsresponse": {"count": 12, "thing": [{"id": "a", "name": "x<y"}, {"id": "b"}]}
        }
    else:
        assert b"<count>12</count><thing><id>a</id><name>x&lt;y</name></thing>" in body
        assert b"<thing><id>b</id></thing>" in body


def test_an_empty_rendered_page_is_the_empty_object() -> None:
    assert body_of(ListResult("thing", RawJson("[]"), 40)) == {}


async def test_constants_and_arrays_of_related_rows(db: Database) -> None:
    async with db.sessions() as session, session.begin():
        bare, tagged = Zone(name="bare"), Zone(name="tagged")
        session.add_all([bare, tagged])
        await session.flush()
        for key in ("b", "a", "c"):  # the array keeps the tags' own order (by id)
            session.add(
                ResourceTag(
                    key=key,
                    value=f"{key}%s'\"",
                    resource_type="Zone",
                    resource_id=tagged.id,
                    resource_uuid=tagged.uuid,
                )
            )
    tags = JsonArray(
        "tags",
        JsonShape(JsonField("key", ResourceTag.key), JsonField("value", ResourceTag.value)),
        select(ResourceTag.id).where(ResourceTag.resource_id == outer(Zone.id)),
        (ResourceTag.id,),
    )
    shape = JsonShape(
        JsonField("name", Zone.name), JsonConst("odd", '100%s "x"'), tags, JsonConst("flag", False)
    )
    async with db.sessions() as session:
        page = await json_page(session, select(Zone.id), shape, None, order_by=[Zone.id])
    assert json.loads(page.items) == [
        {"name": "bare", "odd": '100%s "x"', "tags": [], "flag": False},
        {
            "name": "tagged",
            "odd": '100%s "x"',
            "flag": False,
            "tags": [{"key": k, "value": f"{k}%s'\""} for k in ("b", "a", "c")],
        },
    ]


async def test_an_outer_joined_column_is_left_out_or_at_worst_null(db: Database) -> None:
    await _jobs(db, 1)  # no account
    owner = select(AsyncJob.id).outerjoin(Account, Account.id == AsyncJob.account_id)
    for optional, expected_member in ((True, {}), (False, {"owner": None})):
        shape = JsonShape(
            JsonField("id", AsyncJob.uuid), JsonField("owner", Account.name, optional=optional)
        )
        async with db.sessions() as session:
            page = await json_page(session, owner, shape, None, order_by=[AsyncJob.id])
        [job] = json.loads(page.items)
        assert {k: v for k, v in job.items() if k != "id"} == expected_member
