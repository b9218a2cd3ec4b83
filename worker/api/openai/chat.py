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

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope

from cluster.components.conversation import ChatMessage
from cluster.components.providers.usage import COUNTER, TokenCount
from cluster.errors import FlowfleetError, FlowNotFound, Forbidden, RunInputError
from cluster.http import read_json_body
from worker.api.auth import ANONYMOUS_CALLER
from worker.api.openai.chat_stream import COMPLETION_IDS, ChatFraming, fingerprint
from worker.api.openai.errors import ModelNotFound, error_response
from worker.api.openai.mapping import answer_text, chat_input, parse_model
from worker.api.openai.messages import chat_turn
from worker.api.openai.params import (
    CHAT_FIELDS,
    CHAT_REFUSED,
    CHAT_USUAL,
    check_fields,
    common,
    include_usage,
)
from worker.api.openai.run import StreamingRun, prepare_renamed, replica_at
from worker.api.openai.wire import EncodedJSON, routing_key, run_headers
from worker.runs import Run, RunCall, admit, version_headers
from worker.stream import StreamedRun

# A `chat.completion` as orjson writes it, made without building and walking its dicts
# (tests/test_openai_wire.py holds the two side by side): the id (chat_stream.COMPLETION_IDS), the
# middle, which changes only with the second, the model and the version, the text, and the close.
ID_OPEN = b'{"id":"'
MIDDLE = (
    b'","object":"chat.completion","created":%d,"model":%s,"system_fingerprint":%s,'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":'
)
CLOSE = (
    b',"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)
NO_TOKENS = CLOSE % (0, 0, 0)
NO_HISTORY: tuple[ChatMessage, ...] = ()
NOTHING_COUNTED = TokenCount()  # never set as a counter, so never added to
# (second, middle) by (model, version): a replica answers few of either.
_MIDDLES: dict[tuple[str, str], tuple[int, bytes]] = {}
MIDDLES_KEPT = 1024


def completion(model: str, digest: str, text: str, tokens: TokenCount) -> bytes:
    """The JSON body of a new chat completion that version `digest` answered with `text`."""
    now = int(time.time())
    key = (model, digest)
    middle = _MIDDLES.get(key)
    if middle is None or middle[0] != now:
        if middle is None and len(_MIDDLES) >= MIDDLES_KEPT:
            _MIDDLES.clear()
        made = MIDDLE % (now, orjson.dumps(model), orjson.dumps(fingerprint(digest)))
        middle = _MIDDLES[key] = (now, made)
    prompt, done = tokens.prompt, tokens.completion
    close = CLOSE % (prompt, done, prompt + done) if prompt or done else NO_TOKENS
    return b"".join((ID_OPEN, next(COMPLETION_IDS), middle[1], orjson.dumps(text), close))


async def chat_completions(scope: Scope, receive: Receive) -> Response:
    """The route's handler (errors.ScopeEndpoint): a run route, so no Request is made for it."""
    replica = replica_at(scope)
    length, key_header = run_headers(scope["headers"])
    auth = replica.run_auth
    caller = auth.authenticate(Headers(scope=scope)) if auth.enabled else ANONYMOUS_CALLER
    body = await read_json_body(scope, receive, length, replica.settings.max_body_bytes)
    if CHAT_USUAL.issuperset(body):  # what check_fields and common would find, found sooner
        model, stream, user = parse_model(body.get("model")), False, None
    else:
        check_fields(body, CHAT_FIELDS, CHAT_REFUSED)
        model, stream, user = common(body)
    messages = body.get("messages")
    only: Any = messages[0] if type(messages) is list and len(messages) == 1 else None
    content = only.get("content") if type(only) is dict and len(only) == 2 else None
    if type(content) is str and only.get("role") == "user":  # one user message of text, no more
        message, history = content, NO_HISTORY  # what chat_turn finds, found sooner
    else:
        message, history = chat_turn(messages)
    with_usage = stream and include_usage(body)
    try:  # run.may_run
        caller.may_run(model.flow)
    except Forbidden as e:
        raise ModelNotFound(model.name) from e
    call = RunCall(
        flow=model.flow,
        inputs={},  # named once the serving version is known (run.py)
        key=user if key_header is None else routing_key(key_header, user),
        user_id=user,
        principal=caller.name,
        version=model.version,
        history=history or None,
    )
    # Nothing may fail between admission (a place in the gate) and the run that settles it.
    try:  # run.open_run
        run = admit(replica, call)
    except FlowNotFound as e:
        raise ModelNotFound(model.name) from e
    if stream:
        streaming = StreamingRun.adopt(run, message)
        return StreamedRun(streaming, ChatFraming(streaming, model.name, with_usage))
    # run.run_plain, inline: the request's one coroutine runs the flow too.
    tokens = NOTHING_COUNTED
    try:
        name = chat_input(run.served.compiled)
        call.inputs[name] = message
        try:
            await Run.prepare(run)
        except RunInputError as e:
            await prepare_renamed(run, name, message, e)
        # Tokens come back only from providers that are called (an echo model, templates and parsers
        # alone use none): a version that calls nothing out answers 0 without setting a counter.
        if getattr(run.compiled, "calls_out", True):
            tokens = TokenCount()
            counting = COUNTER.set(tokens)  # tasks the run starts copy the context, and the counter
            try:
                finished = await run.execute(receive)
            finally:
                COUNTER.reset(counting)
        else:
            finished = await run.execute(receive)
    except BaseException as e:
        run.end(e)  # settled exactly once, as leaving `async with run` does
        if isinstance(e, FlowfleetError):
            return error_response(e, run.served)
        raise
    run.end(None)
    text = answer_text(run.compiled, finished.result.outputs)
    served = finished.served
    return EncodedJSON(completion(model.name, served.hash, text, tokens), version_headers(served))
