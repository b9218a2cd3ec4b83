"""`POST /v1/chat/completions`: a flow answers a chat, as OpenAI's Chat Completions API.

    {"model": "support_qa", "messages": [{"role": "user", "content": "How do I reset my password?"}]}

The user's last message is the flow's chat input and the messages before it are the run's history
(the caller holds the conversation: nothing is stored); the answer is the flow's output (mapping.py).
`stream: true` answers `chat.completion.chunk` events (chat_stream.py). `system_fingerprint` is
`fp_` + the first 12 hex characters of the version that answered, which `model: "flow@<those 12>"`
selects again where the flow allows it. Fields: params.py.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import FlowfleetError
from cluster.http import FastJSONResponse, read_json_object
from worker.api.openai.chat_stream import ChatFraming, chat_usage, completion_id, fingerprint
from worker.api.openai.errors import error_response
from worker.api.openai.messages import chat_turn
from worker.api.openai.params import CHAT_FIELDS, CHAT_REFUSED, check_fields, common, include_usage
from worker.api.openai.run import StreamingRun, may_run, open_run, replica_of, routing_key, run_plain
from worker.runs import RunCall, version_headers
from worker.stream import StreamedRun


async def chat_completions(request: Request) -> Response:
    replica = replica_of(request)
    caller = replica.run_auth.authenticate(request.headers)
    body = await read_json_object(request, replica.settings.max_body_bytes)
    check_fields(body, CHAT_FIELDS, CHAT_REFUSED)
    asked = common(body)
    turn = chat_turn(body.get("messages"))
    with_usage = asked.stream and include_usage(body)
    may_run(caller, asked.model)
    call = RunCall(
        flow=asked.model.flow,
        inputs={},  # named once the serving version is known (run.py)
        key=routing_key(request, asked.user),
        user_id=asked.user,
        principal=caller.name,
        version=asked.model.version,
        history=turn.history or None,
    )
    # Nothing may fail between admission (a place in the gate) and the run that settles it.
    run = open_run(replica, call, asked.model)
    if asked.stream:
        streaming = StreamingRun.adopt(run, turn.message)
        return StreamedRun(streaming, ChatFraming(streaming, asked.model.name, with_usage))
    try:
        finished, text, tokens = await run_plain(run, turn.message, request.receive)
    except FlowfleetError as e:
        return error_response(e, run.served)
    served = finished.served
    answer: dict[str, Any] = {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": asked.model.name,
        "system_fingerprint": fingerprint(served.hash),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": chat_usage(tokens),
    }
    return FastJSONResponse(answer, headers=version_headers(served))
