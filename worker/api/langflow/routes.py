"""`POST /api/v1/run/{flow}`, LangFlow's run endpoint (`simplified_run_flow`), on flowfleet's run service.

    curl -s localhost:8000/api/v1/run/support_qa -H 'x-api-key: …' \\
      -d '{"input_value": "How do I reset my password?", "session_id": "chat-7"}'

`{flow}` is the flowfleet flow name (LangFlow also takes a flow's UUID or endpoint name: here the name is
both). `?stream=true` answers LangFlow's event stream (framing.py), `?sse=true` the same events as
server-sent events. Authentication is the replica's run authentication (`x-api-key` or bearer).
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from cluster.errors import FlowfleetError
from cluster.http import FastJSONResponse, read_body
from worker.api.langflow.call import LangflowRun, admit_langflow, replica_of
from worker.api.langflow.errors import error_response
from worker.api.langflow.framing import LangflowFraming
from worker.api.langflow.request import decode_body, parse_request, query_flag
from worker.api.langflow.results import Messages, run_response
from worker.api.langflow.webhook import webhook
from worker.runs import version_headers
from worker.stream import StreamedRun

logger = logging.getLogger(__name__)


async def run_flow(request: Request) -> Response:
    run: LangflowRun | None = None
    try:
        replica = replica_of(request)
        name = request.path_params["flow"]
        caller = replica.run_auth.authenticate(request.headers)
        caller.may_run(name)
        sse = query_flag(request.query_params, "sse")
        stream = query_flag(request.query_params, "stream") or sse
        wanted = parse_request(decode_body(await read_body(request, replica.settings.max_body_bytes)))
        # The one read of the snapshot for this run: everything below uses what `admit` took.
        run = admit_langflow(replica, name, wanted, caller.name, request.headers)
        if stream:
            return StreamedRun(run, LangflowFraming(run, sse=sse))
        async with run:
            await run.prepare()
            finished = await run.execute(request.receive)
        assert run.plan is not None
        messages = Messages(name, run.session_id)
        body = run_response(messages, wanted.input_value, run.plan.outputs, finished.result.outputs)
        return FastJSONResponse(body, headers=version_headers(finished.served))
    except FlowfleetError as e:
        return error_response(e, run.served if run is not None else None)
    except ClientDisconnect:
        raise
    except Exception:
        logger.exception("LangFlow run of %s failed", request.path_params.get("flow"))
        return error_response(None, run.served if run is not None else None)


ROUTES = [
    Route("/api/v1/run/{flow}", run_flow, methods=["POST"]),
    Route("/api/v1/webhook/{flow}", webhook, methods=["POST"]),
]
