"""Reading and deleting the chat conversations replicas keep in Redis (docs/conversations.md).

`ConversationService` lists a flow's conversations, reads one's messages, deletes one (with its session's
version pin) and forgets a user across flows. Deletions are audited in the flow's audit stream without
any message content; a user is recorded only as `user_digest(user_id)`.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

from cluster.errors import FlowfleetError, FlowNotFound
from cluster.names import check_flow_name
from cluster.store import rollouts
from cluster.store.conversations import ANONYMOUS, ConversationRef, ConversationStore, user_digest
from cluster.store.store import Store
from cluster.traffic.canary import InvalidRequestKey, check_request_key, check_session_id
from control.metrics import ControlMetrics

log = logging.getLogger(__name__)


class ConversationNotFound(FlowfleetError):
    """No stored message for that flow, principal and conversation id (never written, expired, deleted)."""

    code = "conversation_not_found"
    http_status = 404
    exit_code = 4

    def __init__(self, ref: ConversationRef) -> None:
        super().__init__(
            f"conversation {ref.id!r} of flow {ref.flow!r} not found",
            flow=ref.flow,
            principal=ref.principal,
            id=ref.id,
        )


def check_principal(value: Any) -> str:
    """The principal a conversation is scoped by: "-" (anonymous runs) or a name without ':' (422)."""
    principal = check_request_key(value, "principal")
    if principal != ANONYMOUS and (":" in principal or principal != principal.strip()):
        raise InvalidRequestKey("principal must not contain ':' or surrounding spaces", field="principal")
    return principal


def ref_dict(ref: ConversationRef) -> dict[str, str]:
    return {"flow": ref.flow, "principal": ref.principal, "id": ref.id}


def deletion_counter(metrics: ControlMetrics) -> Counter:
    """`flowfleet_control_conversations_deleted_total{action}`, registered once per metrics registry."""
    counter: Counter | None = getattr(metrics, "conversations_deleted", None)
    if counter is None:
        counter = Counter(
            "flowfleet_control_conversations_deleted",
            "Conversations deleted through the control API, by action (delete, forget)",
            ["action"],
            registry=metrics.registry,
        )
        metrics.conversations_deleted = counter  # type: ignore[attr-defined]
    return counter


class ConversationService:
    def __init__(self, store: Store, conversations: ConversationStore, metrics: ControlMetrics) -> None:
        self.store = store
        self.conversations = conversations
        self.deleted = deletion_counter(metrics)

    def ref(self, flow: str, conversation_id: Any, principal: Any = ANONYMOUS) -> ConversationRef:
        check_flow_name(flow)
        return ConversationRef(flow, check_principal(principal), check_session_id(conversation_id))

    async def require_flow(self, flow: str) -> None:
        check_flow_name(flow)
        if flow not in await self.store.list_flows():
            raise FlowNotFound(flow)

    async def list(self, flow: str, limit: int = 100) -> dict[str, Any]:
        """The flow's live conversations (principal, id, last_active), most recent first."""
        await self.require_flow(flow)
        return {"flow": flow, "conversations": await self.conversations.list_conversations(flow, limit)}

    async def read(self, flow: str, conversation_id: Any, principal: Any = ANONYMOUS) -> dict[str, Any]:
        ref = self.ref(flow, conversation_id, principal)
        messages = await self.conversations.read(ref)
        if not messages:
            raise ConversationNotFound(ref)
        return {
            **ref_dict(ref),
            "messages": [
                {"role": m.role, "content": m.content, "at": m.at, "sender": m.sender} for m in messages
            ],
        }

    async def delete(
        self, flow: str, conversation_id: Any, principal: Any = ANONYMOUS, *, actor: str
    ) -> dict[str, Any]:
        """Delete the conversation and its session's version pin; 404 (nothing changed) if there is none."""
        ref = self.ref(flow, conversation_id, principal)
        if not await self.conversations.delete(ref):
            raise ConversationNotFound(ref)
        await self.store.redis.delete(self.store.keys.session(ref.flow, ref.id))
        fields = {
            "action": "conversation_delete",
            "by": actor,
            "principal": ref.principal,
            "conversation": ref.id,
        }
        await self._audit(ref.flow, fields)
        self.deleted.labels("delete").inc()
        log.info("conversation deleted flow=%s conversation=%s by=%s", ref.flow, ref.id, actor)
        return {"deleted": ref_dict(ref)}

    async def forget_user(self, user_id: Any, *, actor: str) -> dict[str, Any]:
        """Delete every conversation a run named `user_id` for, across flows, with their session pins."""
        user = check_request_key(user_id, "user_id")
        digest = user_digest(user)
        refs = await self.conversations.forget_user(user)
        for ref in refs:
            await self.store.redis.delete(self.store.keys.session(ref.flow, ref.id))
        per_flow: dict[str, int] = {}
        for ref in refs:
            per_flow[ref.flow] = per_flow.get(ref.flow, 0) + 1
        for flow, count in sorted(per_flow.items()):
            await self._audit(flow, {"action": "user_forget", "by": actor, "user": digest, "count": count})
        self.deleted.labels("forget").inc(len(refs))
        log.info("user forgotten user=%s conversations=%d by=%s", digest, len(refs), actor)
        return {"user": digest, "deleted": [ref_dict(r) for r in refs]}

    async def _audit(self, flow: str, fields: dict[str, Any]) -> None:
        fields["at"] = repr(self.store.clock())
        await rollouts.add_audit(
            self.store.redis, self.store.keys, flow, fields, audit_keep=self.store.audit_keep
        )
