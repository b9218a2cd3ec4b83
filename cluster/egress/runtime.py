"""What components may use to reach the outside world where runs happen: listed secrets, checked HTTP.

Only entry points that run flows for real (a replica, `flowfleet run`) build a Runtime, from the process
environment and the operator's policy. Everything else — publish on the control plane, `sync`,
`validate`, examples — compiles flows without one, and components then stay offline.

>>> from cluster.components.meter import NO_METER, Meter
from cluster.egress.policy import OutboundPolicy
>>> runtime = Runtime.from_environ(OutboundPolicy(), {"OPENAI_API_KEY": "sk-1", "FLOWFLEET_ADMIN_TOKEN": "t"})
>>> sorted(runtime.secrets)
['OPENAI_API_KEY']
>>> runtime.redact("key sk-1 leaked")
'key [redacted] leaked'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import httpcore
import httpx

from cluster.components.meter import NO_METER, Meter
from cluster.egress.policy import OutboundPolicy
from cluster.egress.search import SearchConfig
from cluster.egress.transport import Resolver, egress_client
from cluster.errors import MissingSecret

# Values shorter than this are not redacted from text: they would match ordinary words.
MIN_REDACTED_CHARS = 4
REDACTED = "[redacted]"


def redact_values(text: str, values: Iterable[str]) -> str:
    for value in values:
        if len(value) >= MIN_REDACTED_CHARS and value in text:
            text = text.replace(value, REDACTED)
    return text


@dataclass(frozen=True)
class Runtime:
    policy: OutboundPolicy
    # Only the names the policy lists, and only those set to a non-empty value.
    secrets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Test seams: how names resolve and how sockets open (see cluster.egress.transport).
    resolver: Resolver | None = None
    backend: httpcore.AsyncNetworkBackend | None = None
    # Where components report tool calls, model rounds and tokens (the replica's metrics).
    meter: Meter = NO_METER
    # The operator's web search provider (WebSearch nodes), None when none is configured.
    search: SearchConfig | None = None

    @classmethod
    def from_environ(cls, policy: OutboundPolicy, environ: Mapping[str, str]) -> Runtime:
        """Copy the listed secrets (and the search provider's key) out of `environ`; nothing else of it
        is kept."""
        found = {name: environ[name] for name in sorted(policy.secrets) if environ.get(name)}
        search = SearchConfig.from_environ(policy.search_provider, policy.search_url, environ)
        return cls(policy, MappingProxyType(found), search=search)

    @property
    def sensitive_values(self) -> tuple[str, ...]:
        """Every credential value this runtime holds: what logs and callers must never see."""
        key = self.search.api_key if self.search is not None else None
        return (*self.secrets.values(), *([key] if key else []))

    def missing(self, names: Iterable[str]) -> list[str]:
        return sorted({name for name in names if name not in self.secrets})

    def secret(self, name: str) -> str:
        """The value of a listed secret; raises MissingSecret when it is not listed or not set."""
        value = self.secrets.get(name)
        if value is None:
            raise MissingSecret([name])
        return value

    def http_client(self, *, timeout: float, follow_redirects: bool = False) -> httpx.AsyncClient:
        """An HTTP client every request of which goes through the egress policy."""
        return egress_client(
            self.policy.egress,
            timeout=timeout,
            resolver=self.resolver,
            backend=self.backend,
            proxy=self.policy.proxy,
            follow_redirects=follow_redirects,
        )

    def redact(self, text: str) -> str:
        """`text` with every secret value replaced, for logs and anything a caller may see."""
        return redact_values(text, self.sensitive_values)


class RedactingFilter(logging.Filter):
    """A handler filter that removes secret values from every record it lets through (message and
    traceback), so a log line never carries a key whatever code logged it."""

    def __init__(self, values: Iterable[str]) -> None:
        super().__init__()
        self.values = tuple(v for v in values if len(v) >= MIN_REDACTED_CHARS)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.values:
            return True
        message = record.getMessage()
        cleaned = redact_values(message, self.values)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_values(record.exc_text, self.values)
        return True


def install_redaction(values: Iterable[str]) -> None:
    """Add a RedactingFilter to every handler of the root logger (call after configuring logging)."""
    redactor = RedactingFilter(values)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
