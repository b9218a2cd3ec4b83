"""flowfleet's own run API: `POST /v1/flows/{name}/run`, `GET /v1/flows`, `GET /v1/flows/{name}`.

    {"inputs": {"question": "…"}, "session_id": "s1", "user_id": "u1", "trace": false,
     "stream": false, "version": "<hash or prefix>"}

Every field but `inputs` is optional; any other field is refused (400), and so is an input the flow does
not take (422, listing the inputs it takes). A run asked for as a stream (`"stream": true`, or
`Accept: text/event-stream`) answers server-sent events (worker/stream.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import BadRequest, FlowfleetError, RunInputError, json_type
from cluster.http import (
    FastJSONResponse,
    JSONResponse,
    handle_not_found,
    read_json_object,
)
from cluster.names import check_raw_flow_name
from worker.api.errors import run_error_response
from worker.replica import Replica
from worker.routing import run_keys
from worker.runs import RunCall, admit, not_loaded, run_payload, version_headers
from worker.stream import NativeFraming, StreamedRun, wants_stream

RUN_FIELDS = frozenset({"inputs", "trace", "stream", "session_id", "user_id", "version", "tweaks"})
NATIVE = NativeFraming()


def replica_of(request: Request) -> Replica:
    replica: Replica = request.app.state.replica
    return replica


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false", field=name)
    return value


def parse_run(request: Request, name: str, body: dict[str, Any], principal: str) -> tuple[RunCall, bool]:
    if not RUN_FIELDS.issuperset(body):
        unknown = sorted(set(body) - RUN_FIELDS)
        raise BadRequest(
            f"unknown field(s) {', '.join(map(repr, unknown))}; a run takes {', '.join(sorted(RUN_FIELDS))}",
            unknown=unknown,
            fields=sorted(RUN_FIELDS),
        )
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise RunInputError(f"'inputs' must be a JSON object, not {json_type(inputs)}", field="inputs")
    trace = _flag(body, "trace", False)
    # An explicit `stream` in the body wins over the Accept header.
    stream = _flag(body, "stream", False) if "stream" in body else wants_stream(request.headers.get("accept"))
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise BadRequest("'version' must be a version hash or prefix", field="version")
    tweaks = body.get("tweaks")
    if tweaks is not None and not isinstance(tweaks, dict):
        raise BadRequest("'tweaks' must be an object of node id -> {param: value}", field="tweaks")
    keys = run_keys(request.headers, body)
    user_id = body.get("user_id")
    call = RunCall(
        flow=name,
        inputs=inputs,
        key=keys.key,
        session_id=keys.session_id,
        user_id=user_id if isinstance(user_id, str) else None,
        principal=principal,
        trace=trace,
        version=version,
        tweaks=tweaks,
    )
    return call, stream


async def run_flow(request: Request) -> Response:
    replica = replica_of(request)
    name = request.path_params["name"]
    caller = replica.run_auth.authenticate(request.headers)
    check_raw_flow_name(request.scope.get("raw_path"))
    caller.may_run(name)
    body = await read_json_object(request, replica.settings.max_body_bytes)
    call, stream = parse_run(request, name, body, caller.name)
    # The one read of the snapshot for this run: everything below uses what `admit` took.
    run = admit(replica, call)
    if stream:
        return StreamedRun(run, NATIVE)
    try:
        async with run:
            await run.prepare()
            finished = await run.execute(request.receive)
    except FlowfleetError as e:
        return run_error_response(e, run.served)
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
