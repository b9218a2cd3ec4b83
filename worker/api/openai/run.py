"""One run asked for through the OpenAI API: a worker.runs `Run`, plus the two things only this API needs.

- **The chat input is named by the version that serves.** The user's message becomes the run input
  `mapping.chat_input` names, for the version chosen at admission (stable or canary); when `prepare`
  ends on another one (an explicit `flow@<hash>`, a session's pin) that names its chat input otherwise,
  the message is renamed and the version checked again (`prepare_chat`).
- **Tokens are counted** around `execute` (cluster/components/providers/usage.py), for `usage`.

    run = open_run(replica, call, model)                     # call.inputs: an empty dict of its own
    finished, text, tokens = await run_plain(run, turn.message, request.receive)
    StreamedRun(StreamingRun.adopt(run, turn.message), framing)      # or streamed

A plain run is the `Run` that `admit` made, driven here (chat.py, the hot route, does what `open_run`
and `run_plain` do in its own coroutine); a streamed one is driven by worker.stream's
`StreamedRun`, so `StreamingRun` does the same in its `prepare` and `execute`, and first hands the
framing an `opened` event, so that its opening events (the role chunk, `response.created`) leave with
the head instead of waiting for the first token.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from cluster.components.providers.usage import COUNTER, TokenCount
from cluster.errors import FlowNotFound, Forbidden, RunInputError
from worker.api.auth import Caller
from worker.api.openai.errors import ModelNotFound
from worker.api.openai.mapping import Model, answer_text, chat_input
from worker.replica import Replica
from worker.routing import Served
from worker.runs import Finished, Run, RunCall, Sink, admit

OPENED = "opened"


def replica_of(request: Request) -> Replica:
    return replica_at(request.scope)


# The app last asked and its replica: a process serves one app (tests make several, one at a time),
# and `app.state.replica` is a Python-level __getattr__ per request.
_last: tuple[Any, Replica] | None = None


def replica_at(scope: Scope) -> Replica:
    """The replica of the app serving `scope`."""
    global _last
    app = scope["app"]
    last = _last
    if last is not None and last[0] is app:
        return last[1]
    replica: Replica = app.state.replica
    _last = (app, replica)
    return replica


def may_run(caller: Caller, model: Model) -> None:
    """A flow the caller may not run is one it cannot see: 404, as `GET /v1/models` does not list it."""
    try:
        caller.may_run(model.flow)
    except Forbidden as e:
        raise ModelNotFound(model.name) from e


def open_run(replica: Replica, call: RunCall, model: Model) -> Run:
    """Admit the run (a place in the gate, the snapshot read once), or raise why not: an unknown flow is
    OpenAI's `model_not_found`. `call.inputs` must be an empty dict of this run's own: `prepare_chat`
    puts the message in it, under the name the serving version gives its chat input."""
    try:
        return admit(replica, call)
    except FlowNotFound as e:
        raise ModelNotFound(model.name) from e


def name_input(run: Run, message: str) -> str:
    """Put the message in the run's inputs as the chat input of the version admission chose."""
    name = chat_input(run.served.compiled)
    run.call.inputs[name] = message
    return name


async def prepare_renamed(run: Run, name: str, message: str, refused: RunInputError) -> Served:
    """After `Run.prepare` refused the inputs: prepare again with the message renamed if the version
    it chose names its chat input otherwise; else the refusal stands."""
    chosen = chat_input(run.served.compiled)  # the version prepare chose
    if chosen == name:
        raise refused
    inputs = run.call.inputs
    del inputs[name]
    inputs[chosen] = message
    return await Run.prepare(run)


async def prepare_chat(run: Run, message: str) -> Served:
    """`Run.prepare`, with the message as the chat input of the version that serves."""
    name = name_input(run, message)
    try:
        return await Run.prepare(run)
    except RunInputError as e:
        return await prepare_renamed(run, name, message, e)


async def run_plain(run: Run, message: str, receive: Any) -> tuple[Finished, str, TokenCount]:
    """Run to the end (settled when it leaves): the result, the answer's text and the tokens used.

    What `async with run`, `prepare_chat` and `with TokenCount()` would do, without their coroutines
    and calls (chat.py has the same steps inline)."""
    tokens = TokenCount()
    try:
        name = chat_input(run.served.compiled)
        run.call.inputs[name] = message
        try:
            await Run.prepare(run)
        except RunInputError as e:
            await prepare_renamed(run, name, message, e)
        # Tasks the run starts copy the context, and with it this run's counter.
        counting = COUNTER.set(tokens)
        try:
            finished = await run.execute(receive)
        finally:
            COUNTER.reset(counting)
    except BaseException as e:
        run.end(e)
        raise
    run.end(None)
    return finished, answer_text(run.compiled, finished.result.outputs), tokens


class StreamingRun(Run):
    """A run that worker.stream's `StreamedRun` drives."""

    __slots__ = ("message", "tokens")

    message: str
    tokens: TokenCount

    @classmethod
    def adopt(cls, admitted: Run, message: str) -> StreamingRun:
        """Take over an admitted run (its place in the gate, its start time); `admitted` is not used
        again, so the run is still settled exactly once."""
        run = cls(admitted.replica, admitted.call, admitted.loaded, admitted.served)
        run.started = admitted.started
        run.message, run.tokens = message, TokenCount()
        return run

    async def prepare(self) -> Served:
        return await prepare_chat(self, self.message)

    async def execute(self, receive: Any, sink: Sink | None = None) -> Finished:
        if sink is not None:
            sink({"event": OPENED})
        with TokenCount() as self.tokens:
            return await super().execute(receive, sink)

    def answer(self, finished: Finished) -> str:
        return answer_text(self.compiled, finished.result.outputs)
