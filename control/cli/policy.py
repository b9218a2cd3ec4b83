"""The outbound policy the CLI checks flows against (the same FLOWFLEET_* settings as the servers), and
how it tells a user which secrets and operator services (a web search provider) a flow needs."""

from __future__ import annotations

import os
from typing import Any

from cluster.egress.policy import OutboundPolicy
from cluster.engine import needed_secrets, needed_services
from cluster.errors import FlowValidationError
from cluster.flow.validation import check_and_analyse
from cluster.settings import Settings


def cli_policy() -> OutboundPolicy:
    """FLOWFLEET_FLOW_SECRETS, FLOWFLEET_EGRESS_ALLOW and OPENAI_BASE_URL of this shell."""
    return OutboundPolicy.from_settings(Settings.from_env(os.environ))


# What the replicas must be configured with for each operator service (`needed_services`).
SERVICE_NOTES = {"web_search": "a web search provider (FLOWFLEET_SEARCH_PROVIDER)"}


def secrets_of(document: Any, policy: OutboundPolicy) -> list[str]:
    """The secrets a valid document's nodes need (empty for an invalid one: its problems say more)."""
    return needs_of(document, policy)[0]


def needs_of(document: Any, policy: OutboundPolicy) -> tuple[list[str], list[str]]:
    """(secrets, services) a valid document's nodes need (both empty for an invalid one)."""
    try:
        analysis = check_and_analyse(document, policy=policy)
    except FlowValidationError:
        return [], []
    return needed_secrets(analysis), needed_services(analysis)


def secrets_note(names: list[str]) -> str:
    if not names:
        return "needs no secrets"
    return "needs secret" + ("s" if len(names) > 1 else "") + " " + ", ".join(names)


def needs_note(secrets: list[str], services: list[str]) -> str:
    """ "needs secret OPENAI_API_KEY and a web search provider (FLOWFLEET_SEARCH_PROVIDER)"."""
    parts = [secrets_note(secrets)[len("needs ") :]] if secrets else []
    parts += [SERVICE_NOTES.get(service, f"the {service} service") for service in services]
    return "needs " + " and ".join(parts) if parts else "needs no secrets or services"
