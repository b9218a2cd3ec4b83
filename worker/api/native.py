"""flowfleet's own run API: `POST /v1/flows/{name}/run`, `GET /v1/flows`, `GET /v1/flows/{name}`.

    {"inputs": {"question": "…"}, "session_id": "s1", "user_id": "u1", "trace": false,
     "stream": false, "version": "<hash or prefix>"}

Every field but `inputs` is optional; any other field is refused (400), and so is an input the flow does
not take (422, listing the inputs it takes). A run asked for as a stream (`"stream": true`, or
`Accept: text/event-stream`) answers server-sent events (worker/stream.py).
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from cluster.errors import BadRequest, FlowfleetError, RunInputError, json_type
from cluster.http import FastJSONResponse, JSONResponse, handle_not_found, read_json_body
from cluster.names import check_raw_flow_name
from worker.api.auth import ANONYMOUS_CALLER
from worker.api.errors import run_error_response
from worker.replica import Replica
from worker.routing import request_keys
from worker.runs import RunCall, admit, not_loaded, run_payload, version_headers
from worker.stream import NativeFraming, StreamedRun, wants_stream

RUN_FIELDS = frozenset({"inputs", "trace", "stream", "session_id", "user_id", "version", "tweaks"})
NATIVE = NativeFraming()


def replica_of(request: Request) -> Replica:
    replica: Replica = request.app.state.replica
    return replica


def _not_a_flag(name: str) -> BadRequest:
    return BadRequest(f"'{name}' must be true or false", field=name)


def parse_run(
    name: str, body: dict[str, Any], principal: str, accept: str | None, key_header: str | None
) -> tuple[RunCall, bool]:
    """The run a request body asks for, and whether as a stream; `accept` and `key_header` are the
    request's Accept and X-Flowfleet-Key headers."""
    if not RUN_FIELDS.issuperset(body):
        unknown = sorted(set(body) - RUN_FIELDS)
        raise BadRequest(
            f"unknown field(s) {', '.join(map(repr, unknown))}; a run takes {', '.join(sorted(RUN_FIELDS))}",
            unknown=unknown,
            fields=sorted(RUN_FIELDS),
        )
    get = body.get
    inputs = get("inputs", {})
    if type(inputs) is not dict:  # JSON objects decode to dicts, never to a subclass
        raise RunInputError(f"'inputs' must be a JSON object, not {json_type(inputs)}", field="inputs")
    trace = get("trace", False)
    if type(trace) is not bool:
        raise _not_a_flag("trace")
    # An explicit `stream` in the body wins over the Accept header.
    if "stream" in body:
        stream = body["stream"]
        if type(stream) is not bool:
            raise _not_a_flag("stream")
    else:
        stream = wants_stream(accept)
    version = get("version")
    if version is not None and type(version) is not str:
        raise BadRequest("'version' must be a version hash or prefix", field="version")
    tweaks = get("tweaks")
    if tweaks is not None and type(tweaks) is not dict:
        raise BadRequest("'tweaks' must be an object of node id -> {param: value}", field="tweaks")
    key, session_id = request_keys(key_header, body)
    user_id = get("user_id")
    call = RunCall(
        flow=name,
        inputs=inputs,
        key=key,
        session_id=session_id,
        user_id=user_id if type(user_id) is str else None,
        principal=principal,
        trace=trace,
        version=version,
        tweaks=tweaks,
    )
    return call, stream


def run_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None, bytes | None]:
    """Accept, X-Flowfleet-Key and (raw) Content-Length of a run request, in one pass over its ASGI
    headers (names come lower-cased); the first of each counts, as with Starlette's `Headers.get`."""
    accept = key = length = None
    for name, value in headers:
        if name == b"content-length":
            length = value if length is None else length
        elif name == b"accept":
            accept = value.decode("latin-1") if accept is None else accept
        elif name == b"x-flowfleet-key":
            key = value.decode("latin-1") if key is None else key
    return accept, key, length


async def run_flow(request: Request) -> Response:
    return await serve_run(replica_of(request), request.scope, request.receive)


async def serve_run(replica: Replica, scope: Scope, receive: Receive) -> Response:
    """`POST /v1/flows/{name}/run` on `replica`: worker.app serves it before the router, with no
    Request unless something needs one."""
    name = scope["path_params"]["name"]
    accept, key_header, length = run_headers(scope["headers"])
    auth = replica.run_auth
    caller = auth.authenticate(Headers(scope=scope)) if auth.enabled else ANONYMOUS_CALLER
    raw_path = scope.get("raw_path")
    if raw_path and b"%" in raw_path:  # only a percent-encoded name can hold a '/' the path hides
        check_raw_flow_name(raw_path)
    caller.may_run(name)
    body = await read_json_body(scope, receive, length, replica.settings.max_body_bytes)
    call, stream = parse_run(name, body, caller.name, accept, key_header)
    # The one read of the snapshot for this run: everything below uses what `admit` took.
    run = admit(replica, call)
    if stream:
        return StreamedRun(run, NATIVE)
    try:
        await run.prepare()
        finished = await run.execute(receive)
    except BaseException as e:
        run.end(e)  # what leaving `async with run` does, without its two coroutines
        if isinstance(e, FlowfleetError):
            return run_error_response(e, run.served)
        raise
    run.end(None)
    return FastJSONResponse(run_payload(call, finished), headers=version_headers(finished.served))


def describe(compiled: Any) -> dict[str, Any]:
    """What a caller needs to know about one version: its inputs, outputs and API options."""
    inputs = getattr(compiled, "inputs", ())
    out: dict[str, Any] = {
        "inputs": [spec.as_dict() for spec in inputs],
        "outputs": list(getattr(compiled, "output_names", ())),
        "memory": bool(getattr(compiled, "remembers", False)),
    }
    api = getattr(compiled, "api", None)
    if api is not None:
        tweaks = getattr(api, "tweaks", {})
        out["tweaks"] = {node: sorted(params) for node, params in sorted(tweaks.items())}
        out["version_selection"] = bool(getattr(api, "version_selection", False))
    return out


async def list_flows(request: Request) -> Response:
    replica = replica_of(request)
    replica.run_auth.authenticate(request.headers)
    flows = [loaded.as_dict() for _, loaded in sorted(replica.state.snapshot.flows.items())]
    return JSONResponse({"replica": replica.settings.replica_id, "flows": flows})


async def show_flow(request: Request) -> Response:
    """One flow as this replica serves it, with the inputs its versions take."""
    replica = replica_of(request)
    name = request.path_params["name"]
    caller = replica.run_auth.authenticate(request.headers)
    check_raw_flow_name(request.scope.get("raw_path"))
    caller.may_run(name)
    loaded = replica.state.snapshot.get(name)
    if loaded is None:
        raise not_loaded(replica, name)
    shown = {"replica": replica.settings.replica_id, **loaded.as_dict(), **describe(loaded.compiled)}
    if loaded.canary is not None:
        shown["canary"] = {**shown["canary"], **describe(loaded.canary.compiled)}
    return JSONResponse(shown)


not_found = handle_not_found
