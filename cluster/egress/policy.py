"""The operator's outbound policy: which secrets flows may name and which addresses they may reach.

A flow is data written by deployers; it never decides what it may reach. Components declare what they
use (`Component.outbound`: a secret by name, a URL) and validation checks each use against this policy,
with a problem at its JSON pointer. Values of secrets never pass through here, only names.

>>> policy = OutboundPolicy.build(flow_secrets="OPENAI_API_KEY, HF_TOKEN")
>>> sorted(policy.secrets)
['HF_TOKEN', 'OPENAI_API_KEY']
>>> OutboundPolicy.build(flow_secrets="FLOWFLEET_ADMIN_TOKEN")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cluster.settings.SettingsError: FLOWFLEET_FLOW_SECRETS: FLOWFLEET_ADMIN_TOKEN is one of flowfleet's ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cluster.egress.rules import EgressConfigError, EgressRules
from cluster.egress.search import search_endpoint
from cluster.errors import Problem
from cluster.settings import Settings, SettingsError

DEFAULT_FLOW_SECRETS = "OPENAI_API_KEY,HF_TOKEN"
DEFAULT_EGRESS = "public"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Hugging Face's OpenAI-compatible Inference Providers router: HF_BASE_URL's default.
HF_DEFAULT_BASE_URL = "https://router.huggingface.co/v1"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# flowfleet's own credentials and settings, and the variables Redis clients read a password from.
_RESERVED_PREFIXES = ("FLOWFLEET_",)
_RESERVED_NAMES = frozenset({"REDISCLI_AUTH", "REDIS_URL", "REDIS_PASSWORD"})


@dataclass(frozen=True)
class Outbound:
    """One thing a node uses outside the flow: a secret (by name), a URL found in param `param`, or a
    service the operator configures on the replicas (`web_search`), which a flow cannot name or steer."""

    kind: Literal["secret", "url", "service"]
    param: str
    value: str


def parse_secret_names(text: str) -> frozenset[str]:
    """The names in FLOWFLEET_FLOW_SECRETS (comma or space separated); refuses flowfleet's own."""
    names = frozenset(part for part in re.split(r"[\s,]+", text) if part)
    for name in sorted(names):
        if not _NAME.match(name):
            raise SettingsError(f"FLOWFLEET_FLOW_SECRETS: {name!r} is not an environment variable name")
        if name.upper().startswith(_RESERVED_PREFIXES) or name.upper() in _RESERVED_NAMES:
            raise SettingsError(
                f"FLOWFLEET_FLOW_SECRETS: {name} is one of flowfleet's own credentials "
                "and can never be given to flows"
            )
    return names


@dataclass(frozen=True)
class OutboundPolicy:
    secrets: frozenset[str] = field(default_factory=lambda: parse_secret_names(DEFAULT_FLOW_SECRETS))
    egress: EgressRules = field(default_factory=lambda: EgressRules.parse(DEFAULT_EGRESS))
    proxy: str | None = None
    # The operator's OpenAI-compatible endpoint (OPENAI_BASE_URL), used by nodes that set no base_url.
    openai_base_url: str | None = None
    # The operator's web search provider and endpoint (cluster.egress.search), for WebSearch nodes.
    search_provider: str | None = None
    search_url: str | None = None
    # The operator's Hugging Face endpoint (HF_BASE_URL), for HuggingFaceLLM nodes without base_url.
    hf_base_url: str = HF_DEFAULT_BASE_URL

    @classmethod
    def build(
        cls,
        *,
        flow_secrets: str = DEFAULT_FLOW_SECRETS,
        egress_allow: str = DEFAULT_EGRESS,
        proxy: str | None = None,
        openai_base_url: str | None = None,
        search_provider: str | None = None,
        search_url: str | None = None,
        hf_base_url: str | None = None,
    ) -> OutboundPolicy:
        """Parse the operator's settings; raises SettingsError naming the bad one. Endpoints the operator
        sets (OPENAI_BASE_URL, HF_BASE_URL, the search URL) are allowed automatically; Hugging Face's
        default router is not: it is a public address, reachable only as far as the rules allow."""
        search_url = search_endpoint(search_provider, search_url)
        endpoints = [url for url in (openai_base_url, search_url, hf_base_url) if url]
        text = "" if egress_allow.strip().lower() == "none" else egress_allow
        try:
            rules = EgressRules.parse(text, endpoints)
        except EgressConfigError as e:
            raise SettingsError(f"FLOWFLEET_EGRESS_ALLOW: {e}") from e
        if openai_base_url:
            reason = rules.check_url(openai_base_url)
            if reason is not None:
                raise SettingsError(f"OPENAI_BASE_URL={openai_base_url!r}: {reason}")
        if hf_base_url:
            reason = rules.check_url(hf_base_url)
            if reason is not None:
                raise SettingsError(f"HF_BASE_URL={hf_base_url!r}: {reason}")
        if search_url:
            reason = rules.check_url(search_url)
            if reason is not None:
                raise SettingsError(f"FLOWFLEET_SEARCH_URL={search_url!r}: {reason}")
        return cls(
            parse_secret_names(flow_secrets),
            rules,
            proxy or None,
            openai_base_url or None,
            search_provider or None,
            search_url,
            hf_base_url=hf_base_url or HF_DEFAULT_BASE_URL,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls.build(
            flow_secrets=settings.flow_secrets,
            egress_allow=settings.egress_allow,
            proxy=settings.egress_proxy,
            openai_base_url=settings.openai_base_url,
            search_provider=settings.search_provider,
            search_url=settings.search_url,
            hf_base_url=settings.hf_base_url,
        )

    def problems(self, uses: Iterable[Outbound], params_path: str) -> list[Problem]:
        """What a node's declared uses break of this policy, each at its param's JSON pointer."""
        problems: list[Problem] = []
        for use in uses:
            at = f"{params_path}/{use.param}"
            if use.kind == "secret" and use.value not in self.secrets:
                listed = ", ".join(sorted(self.secrets)) or "none"
                message = (
                    f"secret {use.value} is not one flows may use (FLOWFLEET_FLOW_SECRETS lists: {listed})"
                )
                problems.append(Problem(at, "secret_not_allowed", message))
            elif use.kind == "url":
                reason = self.egress.check_url(use.value)
                if reason is not None:
                    problems.append(Problem(at, "egress_denied", f"{use.value}: {reason}"))
        return problems

    def describe(self) -> str:
        secrets = ", ".join(sorted(self.secrets)) or "none"
        return f"flow secrets: {secrets}; egress: {self.egress.describe()}"


def secret_names(uses: Sequence[Outbound]) -> list[str]:
    return sorted({use.value for use in uses if use.kind == "secret"})


def service_names(uses: Sequence[Outbound]) -> list[str]:
    return sorted({use.value for use in uses if use.kind == "service"})
