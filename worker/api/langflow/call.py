"""A LangFlow request as a run of worker.runs: admitted like any run, planned for the version that serves.

    run = admit_langflow(replica, "support_qa", request, caller.name, headers)
    async with run:
        await run.prepare()          # version chosen, LangFlow's request planned onto it, tweaks applied
        finished = await run.execute(receive)

How `input_value`, tweaks and outputs map depends on the version (its inputs, nodes and outputs), and a
session may be pinned to another version than the one routing picks. So `prepare` plans for the routed
version, lets the run service choose, and plans again for a pinned version that takes the request
differently (then the service prepares once more, following the same pin).

Sessions: LangFlow's `session_id`; a request without one gets a fresh uuid4 (never one shared by every
anonymous caller), which the answer names and which continues the conversation when sent back. A fresh
one only opens a conversation (and a session pin) when the flow has memory; webhook runs have none.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from starlette.requests import Request

from worker.api.langflow.plan import Plan, plan
from worker.api.langflow.request import LangflowRequest
from worker.replica import Replica
from worker.routing import Served, run_keys
from worker.runs import Run, RunCall, admit

Sessions = Literal["given", "fresh", "none"]


def replica_of(request: Request) -> Replica:
    replica: Replica = request.app.state.replica
    return replica


class LangflowRun(Run):
    """An admitted run (it holds the gate place `admit` took) whose call is planned from `request`."""

    __slots__ = ("request", "session_id", "sessions", "plan")

    def __init__(self, admitted: Run, request: LangflowRequest, session_id: str, sessions: Sessions) -> None:
        super().__init__(admitted.replica, admitted.call, admitted.loaded, admitted.served)
        self.started = admitted.started
        self.request, self.session_id, self.sessions = request, session_id, sessions
        self.plan: Plan | None = None

    def _plan_for(self, compiled: Any) -> bool:
        """Plan the request for `compiled`; whether the run's call changed."""
        planned = plan(self.request, compiled)
        keep = self.sessions == "given" or (self.sessions == "fresh" and planned.remembers)
        call = dataclasses.replace(
            self.call,
            inputs=planned.inputs,
            tweaks=planned.tweaks or None,
            session_id=self.session_id if keep else None,
        )
        changed = call != self.call
        self.plan, self.call = planned, call
        return changed

    async def prepare(self) -> Served:
        routed = self.served
        self._plan_for(routed.compiled)
        try:
            served = await super().prepare()
        except Exception:
            if self.served.hash == routed.hash or not self._plan_for(self.served.compiled):
                raise
            return await super().prepare()
        if served.hash != routed.hash and self._plan_for(served.compiled):
            return await super().prepare()
        return served


def admit_langflow(
    replica: Replica,
    flow: str,
    request: LangflowRequest,
    principal: str,
    headers: Mapping[str, str],
    *,
    webhook: bool = False,
) -> LangflowRun:
    """Admit a run of `flow` for LangFlow's `request` (503 / 404 / 422 as `admit` and `run_keys` raise)."""
    session_id = request.session_id or str(uuid.uuid4())
    keys = run_keys(headers, {"session_id": session_id, "user_id": request.user_id})
    call = RunCall(flow=flow, inputs={}, key=keys.key, user_id=request.user_id, principal=principal)
    sessions: Sessions = "none" if webhook else "given" if request.session_id is not None else "fresh"
    return LangflowRun(admit(replica, call), request, session_id, sessions)
