"""First start: ROOT, roles, admin with keys, admin.json 0600 in a 0700 home; idempotent."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

from sqlalchemy import func, select

from mgmt.db.bootstrap import bootstrap
from mgmt.db.engine import Database, open_database
from mgmt.db.models import Account, AccountType, Configuration, Domain, Role, User
from mgmt.db.passwords import check_password
from mgmt.db.settings import get_setting


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def _count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_first_start_creates_root_roles_admin_and_a_private_file(
    db: Database, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    result = await bootstrap(db, home)
    assert result.created and result.username == "admin"
    assert result.password and result.apikey and result.secretkey
    assert len(result.apikey) >= 80 and result.apikey != result.secretkey

    assert _mode(home) == 0o700
    path = home / "admin.json"
    assert result.credentials_file == path and _mode(path) == 0o600
    assert json.loads(path.read_text()) == {
        "username": "admin",
        "password": result.password,
        "apikey": result.apikey,
        "secretkey": result.secretkey,
    }
    assert [p.name for p in home.iterdir()] == ["admin.json"]  # no temporary left

    async with db.sessions() as session:
        root = await session.scalar(select(Domain).where(Domain.parent_id.is_(None)))
        assert root is not None and (root.name, root.path, root.level) == ("ROOT", "ROOT", 0)
        roles = {r.name: r.type for r in await session.scalars(select(Role))}
        assert roles == {"Root Admin": "Admin", "Domain Admin": "DomainAdmin", "User": "User"}
        account = await session.scalar(select(Account).where(Account.name == "admin"))
        assert account is not None
        assert account.type == AccountType.ROOT_ADMIN and account.domain_id == root.id
        user = await session.scalar(select(User).where(User.username == "admin"))
        assert user is not None and user.account_id == account.id
        assert user.api_key == result.apikey and user.secret_key == result.secretkey
        assert check_password(user.password_hash, result.password)
        assert await get_setting(session, "api.throttling.max") == 500
        assert await get_setting(session, "api.throttling.interval") == 1
        assert await get_setting(session, "api.throttling.enabled") is True
        assert isinstance(await get_setting(session, "job.expire.minutes"), int)


async def test_second_start_changes_nothing_and_returns_the_same_keys(
    db: Database, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = await bootstrap(db, home)
    counts = [await _count(db, m) for m in (Domain, Role, Account, User, Configuration)]
    content = (home / "admin.json").read_bytes()

    second = await bootstrap(db, home)
    assert not second.created
    assert (second.password, second.apikey, second.secretkey) == (
        first.password, first.apikey, first.secretkey
    )
    assert [await _count(db, m) for m in (Domain, Role, Account, User, Configuration)] == counts
    assert (home / "admin.json").read_bytes() == content


async def test_a_server_without_the_file_gets_keys_but_no_password(
    db: Database, tmp_path: Path
) -> None:
    first = await bootstrap(db, tmp_path / "one")
    other = await bootstrap(db, tmp_path / "two")
    assert not other.created and other.password is None
    assert (other.apikey, other.secretkey) == (first.apikey, first.secretkey)
    assert not (tmp_path / "two" / "admin.json").exists()


async def test_an_existing_home_is_made_private(db: Database, tmp_path: Path) -> None:
    home = tmp_path / "open"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    await bootstrap(db, home)
    assert _mode(home) == 0o700


async def test_two_servers_starting_together_create_one_admin(
    db_url: str, tmp_path: Path
) -> None:
    one, two = await open_database(db_url), await open_database(db_url)
    try:
        results = await asyncio.gather(
            bootstrap(one, tmp_path / "a"), bootstrap(two, tmp_path / "b")
        )
        assert sorted(r.created for r in results) == [False, True]
        assert results[0].apikey == results[1].apikey
        assert await _count(one, User) == 1 and await _count(one, Domain) == 1
    finally:
        await one.close()
        await two.close()
