"""One frozen Settings object, read from the environment only by entry points.

>>> Settings.from_env({"FLOWFLEET_NAMESPACE": "staging"}).namespace
'staging'
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.errors import FlowfleetError


class SettingsError(FlowfleetError):
    """An environment variable holds a value flowfleet cannot use."""

    code = "bad_setting"
    exit_code = 2


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    # Redis topology (cluster.store.topology): the sentinels' own user, if they require one; the command
    # timeout on request paths (the control API answers 503 within about that); the Redis replicas that
    # must acknowledge a release change ("auto": 1 behind Sentinel or Cluster, 0 on one node) and how long
    # the WAIT for them may take (docs/operations.md, "High availability").
    redis_sentinel_username: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_timeout_s: float = 1.5
    redis_min_replicas: str = "auto"
    redis_wait_ms: int = 500
    namespace: str = "flowfleet"
    # Control plane.
    control_url: str = "http://127.0.0.1:8700"
    token: str | None = None
    admin_token: str | None = None
    tokens_file: str | None = None
    history_keep: int = 100
    audit_keep: int = 10_000
    max_body_bytes: int = 1024 * 1024
    # Worker.
    replica_id: str = field(default_factory=default_replica_id)
    reconcile_s: float = 5.0
    heartbeat_s: float = 2.0
    status_ttl_s: float = 10.0
    watchdog_s: float = 15.0
    ping_s: float = 5.0
    max_concurrent_runs: int = 64
    run_timeout_s: float = 60.0
    shutdown_grace_s: float = 30.0
    # Run authentication (off when unset): a tokens file like the control plane's, for the run APIs.
    run_tokens_file: str | None = None
    # Rollouts. The prepare timeout outlasts the replicas' status TTL (10 s), so a replica that dies
    # during a prepare is seen gone, and no longer waited for, before the rollout would time out.
    prepare_timeout_s: float = 15.0
    session_ttl_s: float = 1800.0
    # Conversations (chat memory in Redis): sliding TTL after the last turn, messages kept per conversation.
    history_ttl_s: float = 86400.0
    history_max_messages: int = 1000
    # Automatic rollback (control plane): check interval (0 disables), consecutive load failures of the
    # current version on one replica, and replicas failing or NACKing it (0 disables that rule).
    guard_interval_s: float = 2.0
    auto_rollback_failures: int = 3
    auto_rollback_replicas: int = 2
    # Canary guard (control plane): abort a canary whose error rate exceeds the stable's by more than
    # `canary_error_margin` (0.05 = 5 points) once both have `canary_min_runs` runs; checked every
    # `canary_guard_s` seconds (0 switches the guard off).
    canary_error_margin: float = 0.05
    canary_min_runs: int = 100
    canary_guard_s: float = 5.0
    # gc never deletes a version published less than this long ago (a publish whose activation is
    # still on its way, a version someone is about to canary): 7 days.
    gc_min_age_s: float = 7 * 86400.0
    # Outbound policy (cluster.egress.policy), the same on the control plane, the CLI and the replicas:
    # the secret names flows may use, the addresses they may reach, an explicit proxy, and the
    # operator's OpenAI-compatible endpoint (used when a node sets no base_url; allowed automatically).
    flow_secrets: str = "OPENAI_API_KEY,HF_TOKEN"
    egress_allow: str = "public"
    egress_proxy: str | None = None
    openai_base_url: str | None = None
    # The operator's Hugging Face endpoint for HuggingFaceLLM nodes without base_url (the Inference
    # Providers router, or a self-hosted TGI / vLLM); allowed automatically.
    hf_base_url: str | None = None
    # The operator's web search provider for WebSearch nodes (`searxng` or `tavily`) and its endpoint
    # (required for searxng; tavily's default is cluster.egress.search.TAVILY_URL); allowed automatically.
    search_provider: str | None = None
    search_url: str | None = None

    # env var name -> field name
    ENV: Mapping[str, str] = field(
        default_factory=lambda: {
            "FLOWFLEET_REDIS_URL": "redis_url",
            "FLOWFLEET_REDIS_SENTINEL_USERNAME": "redis_sentinel_username",
            "FLOWFLEET_REDIS_SENTINEL_PASSWORD": "redis_sentinel_password",
            "FLOWFLEET_REDIS_TIMEOUT_S": "redis_timeout_s",
            "FLOWFLEET_REDIS_MIN_REPLICAS": "redis_min_replicas",
            "FLOWFLEET_REDIS_WAIT_MS": "redis_wait_ms",
            "FLOWFLEET_NAMESPACE": "namespace",
            "FLOWFLEET_URL": "control_url",
            "FLOWFLEET_TOKEN": "token",
            "FLOWFLEET_ADMIN_TOKEN": "admin_token",
            "FLOWFLEET_TOKENS_FILE": "tokens_file",
            "FLOWFLEET_HISTORY_KEEP": "history_keep",
            "FLOWFLEET_AUDIT_KEEP": "audit_keep",
            "FLOWFLEET_MAX_BODY_BYTES": "max_body_bytes",
            "FLOWFLEET_REPLICA_ID": "replica_id",
            "FLOWFLEET_RECONCILE_S": "reconcile_s",
            "FLOWFLEET_HEARTBEAT_S": "heartbeat_s",
            "FLOWFLEET_STATUS_TTL_S": "status_ttl_s",
            "FLOWFLEET_WATCHDOG_S": "watchdog_s",
            "FLOWFLEET_PING_S": "ping_s",
            "FLOWFLEET_MAX_CONCURRENT_RUNS": "max_concurrent_runs",
            "FLOWFLEET_RUN_TIMEOUT_S": "run_timeout_s",
            "FLOWFLEET_SHUTDOWN_GRACE_S": "shutdown_grace_s",
            "FLOWFLEET_RUN_TOKENS_FILE": "run_tokens_file",
            "FLOWFLEET_PREPARE_TIMEOUT_S": "prepare_timeout_s",
            "FLOWFLEET_SESSION_TTL_S": "session_ttl_s",
            "FLOWFLEET_HISTORY_TTL_S": "history_ttl_s",
            "FLOWFLEET_HISTORY_MAX_MESSAGES": "history_max_messages",
            "FLOWFLEET_GUARD_S": "guard_interval_s",
            "FLOWFLEET_AUTO_ROLLBACK_FAILURES": "auto_rollback_failures",
            "FLOWFLEET_AUTO_ROLLBACK_REPLICAS": "auto_rollback_replicas",
            "FLOWFLEET_CANARY_ERROR_MARGIN": "canary_error_margin",
            "FLOWFLEET_CANARY_MIN_RUNS": "canary_min_runs",
            "FLOWFLEET_CANARY_GUARD_S": "canary_guard_s",
            "FLOWFLEET_GC_MIN_AGE_S": "gc_min_age_s",
            "FLOWFLEET_FLOW_SECRETS": "flow_secrets",
            "FLOWFLEET_EGRESS_ALLOW": "egress_allow",
            "FLOWFLEET_EGRESS_PROXY": "egress_proxy",
            "OPENAI_BASE_URL": "openai_base_url",
            "HF_BASE_URL": "hf_base_url",
            "FLOWFLEET_SEARCH_PROVIDER": "search_provider",
            "FLOWFLEET_SEARCH_URL": "search_url",
        },
        repr=False,
        compare=False,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from environment variables; explicit keyword overrides win over the environment."""
        defaults = cls()
        values: dict[str, Any] = {}
        for var, name in defaults.ENV.items():
            raw = environ.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _convert(var, raw, type(getattr(defaults, name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(defaults, **values)


def _convert(var: str, raw: str, kind: type) -> Any:
    try:
        if kind is int:
            value: Any = int(raw)
        elif kind is float:
            value = float(raw)
        else:
            return raw
    except ValueError as e:
        raise SettingsError(f"{var}={raw!r} is not a valid {kind.__name__}") from e
    if value < 0:
        raise SettingsError(f"{var}={raw!r} must not be negative")
    return value
