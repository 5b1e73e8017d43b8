"""login, logout, registerUserKeys, getUserKeys."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from mgmt.api.envelope import ObjectResult, PlainResult
from mgmt.api.errors import ApiError
from mgmt.api.registry import Param, command
from mgmt.commands.common import not_found
from mgmt.db.models import Account, Domain, User
from mgmt.db.tenancy import owned_by
from mgmt.server.http import SESSION_COOKIE


def _domain_path(args) -> str:
    """CloudStack's domain parameter: '/' or 'ROOT' for ROOT, 'sub/leaf' below it."""
    value = (args.get("domain") or "/").strip("/")
    if not value or value.upper() == "ROOT":
        return "ROOT"
    return value if value.upper().startswith("ROOT/") else f"ROOT/{value}"


@command(
    "login",
    description="Logs a user in and opens a session (sessionkey and a session cookie)",
    params=[
        Param("username", required=True, description="user name"),
        Param("password", required=True, description="password (send it by POST)"),
        Param("domain", description="domain path, e.g. / (ROOT) or sub/leaf"),
        Param("domainId", "uuid", description="domain id, instead of domain"),
    ],
    authenticated=False,
    since="1.0.0",
)
async def login(call, args) -> PlainResult:
    server = call.server
    path = _domain_path(args)
    if args.get("domainId"):
        async with server.db.sessions() as session:
            path = (
                await session.scalar(
                    select(Domain.path).where(
                        Domain.uuid == args["domainId"], Domain.removed.is_(None)
                    )
                )
                or ""
            )
    found = await server.directory.login(args["username"], args["password"], path)
    if found is None:
        raise ApiError(531, "Failed to authenticate user: check the user name, password and domain")
    user, account, domain, key = found
    call.cookies = {SESSION_COOKIE: key}
    return PlainResult(
        {
            "username": user.username,
            "userid": user.uuid,
            "firstname": user.firstname,
            "lastname": user.lastname,
            "account": account.name,
            "domainid": domain.uuid,
            "type": str(account.type),
            "timeout": str(int(server.directory.session_timeout)),
            "registered": "false",
            "sessionkey": key,
        }
    )


@command("logout", description="Ends the caller's session", since="1.0.0")
async def logout(call, args) -> PlainResult:
    key = call.params.get("sessionkey")
    if key:
        await call.server.directory.logout(key)
    call.cookies = {SESSION_COOKIE: ""}
    return PlainResult({"description": "success"})


async def _user_for(call, user_uuid: str, session):
    query = (
        select(User)
        .join(Account, User.account_id == Account.id)
        .where(User.uuid == user_uuid, User.removed.is_(None))
    )
    user = await session.scalar(owned_by(query, Account, call.caller))
    if user is None:
        raise not_found("user", user_uuid)
    return user


@command(
    "registerUserKeys",
    description="Generates new API and secret keys for a user (replacing the old ones)",
    params=[Param("id", "uuid", required=True, description="the user", resource="user")],
    response="userkeys",
    since="2.0.0",
)
async def register_user_keys(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        user = await _user_for(call, args["id"], session)
        old = user.api_key
        user.api_key, user.secret_key = secrets.token_urlsafe(64), secrets.token_urlsafe(64)
        await session.commit()
        call.server.directory.forget_key(old)
        return ObjectResult("userkeys", {"apikey": user.api_key, "secretkey": user.secret_key})


@command(
    "getUserKeys",
    description="Shows a user's API and secret keys",
    params=[Param("id", "uuid", required=True, description="the user", resource="user")],
    response="userkeys",
    since="4.10.0",
)
async def get_user_keys(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        user = await _user_for(call, args["id"], session)
        return ObjectResult("userkeys", {"apikey": user.api_key, "secretkey": user.secret_key})
