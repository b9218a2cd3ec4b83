"""The outbound policy the CLI checks flows against (the same FLOWFLEET_* settings as the servers), and
how it tells a user which secrets a flow needs."""

from __future__ import annotations

import os
from typing import Any

from cluster.egress.policy import OutboundPolicy
from cluster.engine import needed_secrets
from cluster.errors import FlowValidationError
from cluster.flow.validation import check_and_analyse
from cluster.settings import Settings


def cli_policy() -> OutboundPolicy:
    """FLOWFLEET_FLOW_SECRETS, FLOWFLEET_EGRESS_ALLOW and OPENAI_BASE_URL of this shell."""
    return OutboundPolicy.from_settings(Settings.from_env(os.environ))


def secrets_of(document: Any, policy: OutboundPolicy) -> list[str]:
    """The secrets a valid document's nodes need (empty for an invalid one: its problems say more)."""
    try:
        return needed_secrets(check_and_analyse(document, policy=policy))
    except FlowValidationError:
        return []


def secrets_note(names: list[str]) -> str:
    if not names:
        return "needs no secrets"
    return "needs secret" + ("s" if len(names) > 1 else "") + " " + ", ".join(names)
