"""`POST /v1/responses`: a flow answers, as OpenAI's Responses API, and remembers the conversation.

    {"model": "support_qa", "input": "My name is Ada"}                                   -> resp_<c>_<r1>
    {"model": "support_qa", "input": "What is my name?", "previous_response_id": "resp_<c>_<r1>"}

A stored response (`store` is true by default) is one turn of a conversation kept in Redis like a
native run's `session_id` (docs/conversations.md): the conversation id `<c>` is part of the response
id, so any replica continues it from `previous_response_id` alone, with no key of its own; with run
authentication on, conversations are the caller's principal's, so another principal continuing the id
starts empty. Each response has its own id; every one of a conversation continues it (from the latest
turn: the stored conversation has no branches). The conversation's session pin keeps it on the version
it started with, as a native session.

Not stored: `store: false` (with `previous_response_id` the stored conversation is read, not added
to), and an `input` that carries earlier messages itself (the caller holds that conversation; with
`previous_response_id` only the next user message may be given). Their ids (`resp_<48 hex>`) cannot
be continued: 404 `previous_response_not_found`, as for an id that is not one of ours. A continued
conversation that expired (FLOWFLEET_HISTORY_TTL_S) starts empty. Fields: params.py.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.components.conversation import ChatMessage
from cluster.errors import FlowfleetError
from cluster.http import FastJSONResponse, read_json_object
from worker.api.openai.errors import OpenAIRequestError, error_response
from worker.api.openai.messages import responses_turn
from worker.api.openai.params import RESPONSES_FIELDS, RESPONSES_REFUSED, check_fields, common, flag
from worker.api.openai.responses_stream import ResponsesFraming, Shape
from worker.api.openai.run import StreamingRun, may_run, open_run, replica_of, run_plain
from worker.api.openai.wire import routing_key
from worker.replica import Replica
from worker.routing import KEY_HEADER
from worker.runs import RunCall, version_headers
from worker.stream import StreamedRun

STORED_ID = re.compile(r"^resp_([0-9a-f]{32})_[0-9a-f]{16}$")


class PreviousResponseNotFound(FlowfleetError):
    code = "previous_response_not_found"
    http_status = 404

    def __init__(self, previous: str) -> None:
        super().__init__(
            f"Previous response with id '{previous}' not found: only stored responses can be continued",
            param="previous_response_id",
        )


def response_id(conversation: str | None) -> str:
    """`resp_<conversation>_<16 hex>` for a stored turn, `resp_<48 hex>` for one that is not."""
    if conversation is None:
        return "resp_" + secrets.token_hex(24)
    return f"resp_{conversation}_{secrets.token_hex(8)}"


def conversation_of(previous: Any) -> str:
    """The conversation a previous response id belongs to.

    >>> conversation_of("resp_" + "ab" * 16 + "_0123456789abcdef")
    'abababababababababababababababab'
    """
    if not isinstance(previous, str):
        raise OpenAIRequestError("'previous_response_id' must be a response id", "previous_response_id")
    found = STORED_ID.match(previous)
    if found is None:
        raise PreviousResponseNotFound(previous)
    return found.group(1)


async def stored_history(replica: Replica, flow: str, principal: str, conversation: str) -> list[ChatMessage]:
    """A stored conversation, read for a turn that will not be added to it (`store: false`)."""
    opened = replica.conversations.open(flow, principal, conversation, None)
    return await opened.history(replica.settings.history_max_messages)


async def create_response(request: Request) -> Response:
    replica = replica_of(request)
    caller = replica.run_auth.authenticate(request.headers)
    body = await read_json_object(request, replica.settings.max_body_bytes)
    check_fields(body, RESPONSES_FIELDS, RESPONSES_REFUSED)
    asked = common(body)
    store = flag(body, "store", True)
    turn = responses_turn(body.get("input"))
    previous = body.get("previous_response_id")
    may_run(caller, asked.model)
    history = turn.history or None
    conversation: str | None = None
    if previous is not None:
        continued = conversation_of(previous)
        if history is not None:
            raise OpenAIRequestError(
                "with previous_response_id, 'input' is the next user message only: the stored "
                "conversation holds the turns before it",
                "input",
            )
        if store:
            conversation = continued
        else:
            history = tuple(await stored_history(replica, asked.model.flow, caller.name, continued))
    elif store and history is None:
        conversation = secrets.token_hex(16)
    call = RunCall(
        flow=asked.model.flow,
        inputs={},  # named once the serving version is known (run.py)
        key=routing_key(request.headers.get(KEY_HEADER), asked.user) or conversation,
        session_id=conversation,
        user_id=asked.user,
        principal=caller.name,
        version=asked.model.version,
        history=history,
    )
    shape = Shape(
        id=response_id(conversation),
        model=asked.model.name,
        previous=previous,
        stored=conversation is not None,
        user=asked.user,
        metadata=body.get("metadata"),
    )
    # Nothing may fail between admission (a place in the gate) and the run that settles it.
    run = open_run(replica, call, asked.model)
    if asked.stream:
        streaming = StreamingRun.adopt(run, turn.message)
        return StreamedRun(streaming, ResponsesFraming(streaming, shape))
    try:
        finished, text, tokens = await run_plain(run, turn.message, request.receive)
    except FlowfleetError as e:
        return error_response(e, run.served)
    answer = shape.response("completed", text, tokens)
    return FastJSONResponse(answer, headers=version_headers(finished.served))
