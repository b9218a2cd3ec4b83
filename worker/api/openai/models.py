"""`GET /v1/models` and `GET /v1/models/{model}`: the flows this replica serves, as OpenAI models.

    {"object": "list", "data": [{"id": "support_qa", "object": "model", "created": 1764105308,
                                 "owned_by": "flowfleet"}]}

Only flows the caller may run are listed (run authentication's `flows`); `created` is when this
replica loaded the flow's current release (unix seconds). A flow it does not serve, or one the caller
may not run, is a 404 `model_not_found`. `GET /v1/models/{flow}@{version}` checks the flow only: which
versions a flow serves per call is decided when it runs (worker/pick.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cluster.errors import Forbidden
from cluster.http import FastJSONResponse
from worker.api.openai.errors import ModelNotFound
from worker.api.openai.mapping import parse_model
from worker.api.openai.run import replica_of
from worker.state import LoadedFlow


def model_object(name: str, loaded: LoadedFlow) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(loaded.loaded_at), "owned_by": "flowfleet"}


async def list_models(request: Request) -> Response:
    replica = replica_of(request)
    caller = replica.run_auth.authenticate(request.headers)
    allowed = caller.flows
    data = [
        model_object(name, loaded)
        for name, loaded in sorted(replica.state.snapshot.flows.items())
        if allowed is None or name in allowed
    ]
    return FastJSONResponse({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    replica = replica_of(request)
    caller = replica.run_auth.authenticate(request.headers)
    model = parse_model(request.path_params["model"])
    loaded = replica.state.snapshot.get(model.flow)
    try:
        caller.may_run(model.flow)
    except Forbidden as e:
        raise ModelNotFound(model.name) from e
    if loaded is None:
        raise ModelNotFound(model.name)
    return FastJSONResponse(model_object(model.name, loaded))
