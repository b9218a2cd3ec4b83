"""`POST /api/v1/webhook/{flow}`: LangFlow's webhook, a run whose request is answered before it finishes.

    curl -s localhost:8000/api/v1/webhook/triage -H 'x-api-key: …' -d '{"ticket": 4711, "text": "…"}'
    {"message": "Task started in the background", "status": "in progress"}        (202)

The body (any text; JSON is usual) is the flow's input, as LangFlow hands it to a Webhook component: an
input taking any value gets its decoded JSON (`{"payload": text}` when it is not JSON), a chat or text
input the text itself. The run is admitted, its version chosen and its inputs checked before the 202, so
an unknown flow (404), a full replica (503) or an input the flow cannot take (422) is still answered;
then it runs in the background through the run service like any run (gate, metrics, run stats). Replica
shutdown waits for it within the grace period, then cancels it (worker.replica.Replica.in_background).
The answer is not kept anywhere: a webhook run has no session, so it stores no conversation either.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from cluster.errors import BadRequest, FlowfleetError, Unavailable
from cluster.http import FastJSONResponse, read_body
from worker.api.langflow.call import LangflowRun, admit_langflow, replica_of
from worker.api.langflow.errors import error_response
from worker.api.langflow.request import LangflowRequest

logger = logging.getLogger(__name__)

ACCEPTED = {"message": "Task started in the background", "status": "in progress"}
EMPTY = "Request body is empty. You should provide a JSON payload containing the flow ID."


async def run_in_background(run: LangflowRun, ready: asyncio.Future[None]) -> None:
    """Prepare the run (its outcome resolves `ready`: the request answers with it), then execute it."""
    flow = run.call.flow
    try:
        async with run:
            try:
                await run.prepare()
            except asyncio.CancelledError:
                ready.set_exception(Unavailable("shutting_down", "replica is shutting down"))
                raise
            except BaseException as e:
                ready.set_exception(e)
                raise
            ready.set_result(None)
            await run.execute(None)
    except asyncio.CancelledError:
        if ready.done() and not ready.exception():
            logger.warning("webhook run of flow=%s cancelled: the replica stopped", flow)
        raise
    except Exception as e:
        if not (ready.done() and ready.exception() is e):  # else the request was answered with it
            logger.warning("webhook run of flow=%s failed: %r", flow, e)
        return
    logger.info("webhook run of flow=%s version=%s finished", flow, run.served.hash[:12])


async def webhook(request: Request) -> Response:
    run: LangflowRun | None = None
    try:
        replica = replica_of(request)
        name = request.path_params["flow"]
        caller = replica.run_auth.authenticate(request.headers)
        caller.may_run(name)
        body = await read_body(request, replica.settings.max_body_bytes)
        if not body:
            raise BadRequest(EMPTY)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"the webhook's body must be UTF-8 text: {e}") from e
        wanted = LangflowRequest(input_value=text, input_type="any", output_type="any", webhook=True)
        run = admit_langflow(replica, name, wanted, caller.name, request.headers, webhook=True)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        replica.in_background(run_in_background(run, ready), name=f"flowfleet-webhook:{name}")
        await ready
        return FastJSONResponse(ACCEPTED, status_code=202)
    except FlowfleetError as e:
        return error_response(e, run.served if run is not None else None)
    except ClientDisconnect:
        raise
    except Exception:
        logger.exception("LangFlow webhook of %s failed", request.path_params.get("flow"))
        return error_response(None, run.served if run is not None else None)
