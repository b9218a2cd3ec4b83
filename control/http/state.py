"""What the control API's handlers share: settings, tokens, metrics and (while running) the service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from cluster.settings import Settings
from cluster.store.redis_conn import RedisClient
from control.http.auth import TokenTable
from control.metrics import ControlMetrics
from control.service import ControlService

if TYPE_CHECKING:
    from control.canary.service import CanaryService


@dataclass
class ControlState:
    """Reached through `request.app.state.control`; `service` and `redis` exist while the app runs."""

    settings: Settings
    tokens: TokenTable
    metrics: ControlMetrics
    service: ControlService | None = None
    redis: RedisClient | None = None
    canaries: CanaryService | None = None


def control_state(request: Request) -> ControlState:
    state: ControlState = request.app.state.control
    return state


def service_of(request: Request) -> ControlService:
    service = control_state(request).service
    if service is None:
        raise RuntimeError("the control app's lifespan has not started")
    return service
