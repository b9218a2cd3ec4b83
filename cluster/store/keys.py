"""Every Redis key and channel name flowfleet uses, built from one namespace prefix.

No key string is spelled anywhere else: the store, the worker, the ACL file and docs/redis-layout.md all
follow this module. Per-flow keys carry the flow name as a Redis Cluster hash tag, so every script that
touches one flow's keys stays in one slot.

>>> k = Keys("flowfleet")
>>> k.release("support_qa")
'flowfleet:{support_qa}:release'
>>> k.channel()
'flowfleet:events'
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.names import NAMESPACE, InvalidName, check_flow_name


@dataclass(frozen=True)
class Keys:
    namespace: str = "flowfleet"

    def __post_init__(self) -> None:
        if not NAMESPACE.match(self.namespace):
            raise InvalidName(f"invalid namespace {self.namespace!r}", namespace=self.namespace)

    # -- global --------------------------------------------------------------------------------
    def flows(self) -> str:
        """SET of every flow name that has at least one stored version."""
        return f"{self.namespace}:flows"

    def channel(self) -> str:
        """The one pub/sub channel carrying every change event of this namespace."""
        return f"{self.namespace}:events"

    def audit(self) -> str:
        """STREAM of namespace-wide audit entries (gc, token events); per-flow entries use flow_audit."""
        return f"{self.namespace}:audit"

    def replicas(self) -> str:
        """ZSET replica id -> last heartbeat (unix seconds)."""
        return f"{self.namespace}:replicas"

    def replica(self, replica_id: str) -> str:
        """STRING (JSON) with the replica's status; expires when the replica stops heartbeating."""
        return f"{self.namespace}:replica:{replica_id}"

    def replica_pattern(self) -> str:
        return f"{self.namespace}:replica:*"

    def lease(self, name: str) -> str:
        """STRING with TTL: the control plane holding the lease `name` (one guard acting at a time)."""
        return f"{self.namespace}:lease:{name}"

    # -- per flow (hash tag = flow name) ----------------------------------------------------------
    def _flow(self, flow: str) -> str:
        return f"{self.namespace}:{{{check_flow_name(flow)}}}"

    def release(self, flow: str) -> str:
        """HASH: the release record (hash, generation, previous_hash, activated_by, activated_at, reason)."""
        return f"{self._flow(flow)}:release"

    def history(self, flow: str) -> str:
        """LIST of JSON release entries, newest first, capped."""
        return f"{self._flow(flow)}:history"

    def versions(self, flow: str) -> str:
        """ZSET of stored version hashes scored by creation time."""
        return f"{self._flow(flow)}:versions"

    def blob(self, flow: str, digest: str) -> str:
        """STRING: the canonical JSON bytes of one version; its sha256 is `digest`."""
        return f"{self._flow(flow)}:blob:{digest}"

    def meta(self, flow: str, digest: str) -> str:
        """HASH: author, message, created_at, size, node_count, parent of one version."""
        return f"{self._flow(flow)}:meta:{digest}"

    def flow_audit(self, flow: str) -> str:
        """STREAM of the flow's audit entries (publish, activate, rollback ...), capped."""
        return f"{self._flow(flow)}:audit"

    def rollout(self, flow: str) -> str:
        """HASH: the flow's latest two-phase rollout (id, hash, state, replicas, failures ...)."""
        return f"{self._flow(flow)}:rollout"

    def session(self, flow: str, session_id: str) -> str:
        """STRING (JSON pin) with TTL: the version a session of the flow runs (written by replicas)."""
        return f"{self._flow(flow)}:session:{session_id}"

    def session_pattern(self) -> str:
        """Glob matching every session pin of the namespace (the replicas' ACL write grant)."""
        return f"{self.namespace}:{{*}}:session:*"

    def conversation(self, flow: str, principal: str, conversation_id: str) -> str:
        """LIST of JSON chat messages (role, content, at, sender), oldest first, trimmed, sliding TTL: one
        conversation of the flow, scoped by the caller's principal ("-" when runs are anonymous)."""
        return f"{self._flow(flow)}:conversation:{principal}:{conversation_id}"

    def conversations(self, flow: str) -> str:
        """ZSET "<principal>:<conversation id>" -> last activity (unix seconds): the flow's conversations."""
        return f"{self._flow(flow)}:conversations"

    def user_conversations(self, user_id: str) -> str:
        """SET of "<flow> <principal>:<conversation id>": every conversation a run named `user_id` for
        (so a user can be forgotten across flows); its TTL follows the newest conversation."""
        return f"{self.namespace}:user:{user_id}:conversations"

    def conversation_patterns(self) -> tuple[str, ...]:
        """Globs of the conversation keys (the replicas' ACL write grants)."""
        ns = self.namespace
        return (f"{ns}:{{*}}:conversation:*", f"{ns}:{{*}}:conversations", f"{ns}:user:*")

    def flow_prefix(self, flow: str) -> str:
        """Prefix shared by every key of one flow (for SCAN and ACL patterns)."""
        return f"{self._flow(flow)}:"

    def all_pattern(self) -> str:
        """Glob matching every key of the namespace (ACL rules, backups)."""
        return f"{self.namespace}:*"
