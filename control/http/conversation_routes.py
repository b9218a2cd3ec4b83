"""Request handlers of the conversation routes: read the path and query, call the service, render JSON."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cluster.http import JSONResponse
from cluster.store.conversations import ANONYMOUS
from control.conversations import ConversationService
from control.http.auth import Principal
from control.http.routes import name_of, query_int


def conversations_of(request: Request) -> ConversationService:
    service: ConversationService | None = getattr(request.app.state, "conversations", None)
    if service is None:
        raise RuntimeError("the control app's lifespan has not started")
    return service


def principal_of(request: Request) -> str:
    return request.query_params.get("principal", ANONYMOUS)


async def list_conversations(request: Request, principal: Principal) -> Response:
    body = await conversations_of(request).list(name_of(request), query_int(request, "limit", 100))
    return JSONResponse(body)


async def read_conversation(request: Request, principal: Principal) -> Response:
    conversation_id = request.path_params["id"]
    body = await conversations_of(request).read(name_of(request), conversation_id, principal_of(request))
    return JSONResponse(body)


async def delete_conversation(request: Request, principal: Principal) -> Response:
    body = await conversations_of(request).delete(
        name_of(request), request.path_params["id"], principal_of(request), actor=principal.name
    )
    return JSONResponse(body)


async def forget_user(request: Request, principal: Principal) -> Response:
    body = await conversations_of(request).forget_user(request.path_params["user_id"], actor=principal.name)
    return JSONResponse(body)
