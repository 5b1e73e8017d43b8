"""The HTTP side of the API: /client/api on GET and POST, and the agents' signed
heartbeats on POST /skiff/v1/heartbeat (mgmt.server.heartbeat)."""

from __future__ import annotations

from aiohttp import web

from appliances.common.heartbeat import PATH as HEARTBEAT_PATH
from mgmt.api.dispatch import Dispatcher
from mgmt.server.heartbeat import receive

DISPATCHER = web.AppKey("dispatcher", Dispatcher)
SESSION_COOKIE = "sessionkey"


async def api(request: web.Request) -> web.Response:
    if request.method not in ("GET", "POST"):
        return web.Response(status=405, text="use GET or POST")
    pairs = list(request.query.items())
    if request.method == "POST":
        form = await request.post()
        pairs += [(k, v) for k, v in form.items() if isinstance(v, str)]
    answer = await request.app[DISPATCHER].handle(
        pairs, session_cookie=request.cookies.get(SESSION_COOKIE)
    )
    response = web.Response(
        status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type}
    )
    for name, value in (answer.cookies or {}).items():
        if value:
            response.set_cookie(name, value, httponly=True, samesite="Strict")
        else:
            response.del_cookie(name)
    return response


async def heartbeat(request: web.Request) -> web.Response:
    server = request.app[DISPATCHER].server
    return await receive(request, getattr(server, "orchestrator", None))


def build_app(dispatcher: Dispatcher) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[DISPATCHER] = dispatcher
    app.router.add_route("*", "/client/api", api)
    app.router.add_route("*", "/client/api/", api)
    app.router.add_post(HEARTBEAT_PATH, heartbeat)
    return app
