"""Outbound policies and runtimes for tests: real calls go to loopback servers the policy allows."""

from __future__ import annotations

from collections.abc import Mapping

from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime

LOOPBACK = "127.0.0.1"


def loopback_policy(*secrets: str, allow: str = LOOPBACK) -> OutboundPolicy:
    """A policy listing `secrets` (default OPENAI_API_KEY) that lets flows reach 127.0.0.1."""
    return OutboundPolicy.build(flow_secrets=",".join(secrets or ("OPENAI_API_KEY",)), egress_allow=allow)


def loopback_runtime(environ: Mapping[str, str], *secrets: str, allow: str = LOOPBACK) -> Runtime:
    """A runtime as a replica builds it from `environ`, allowed to call loopback servers."""
    return Runtime.from_environ(loopback_policy(*secrets, allow=allow), environ)
