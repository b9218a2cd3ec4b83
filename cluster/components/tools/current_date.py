"""CurrentDate: the current date and time in a time zone; optional input `timezone`, output `text`.

    {"id": "now", "type": "CurrentDate", "params": {"timezone": "Europe/Paris"}}

    -> "2026-12-05T19:25:29+01:00 (Saturday)"

ISO-8601 to the second with the UTC offset, then the weekday in English (never the process locale's).
The zone is an IANA name: the `timezone` input (what a model passes), else `params.timezone`, else UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.tools.common import arguments_schema, tool_params_schema
from cluster.errors import ComponentError, Problem
from cluster.flow.templates import to_text

DEFAULT_TIMEZONE = "UTC"
MAX_ZONE_CHARS = 64
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# What IANA names look like; anything else never reaches the zoneinfo lookup (which reads files).
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ComponentError when there is no such zone.

    >>> zone("Europe/Paris").key
    'Europe/Paris'
    """
    if len(name) > MAX_ZONE_CHARS or not _ZONE_NAME.fullmatch(name):
        raise ComponentError(f"unknown time zone {name[:MAX_ZONE_CHARS]!r} (expected an IANA name)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # OSError: a directory, e.g. "America"
        raise ComponentError(f"unknown time zone {name!r} (expected an IANA name like Europe/Paris)") from e


def describe_now(tz: ZoneInfo) -> str:
    """Now in `tz`, e.g. "2026-12-05T18:25:29+00:00 (Saturday)"."""
    now = datetime.now(tz).replace(microsecond=0)
    return f"{now.isoformat()} ({WEEKDAYS[now.weekday()]})"


class CurrentDate(Component):
    type_name = "CurrentDate"
    description = (
        "Returns the current date and time (ISO-8601 with UTC offset, and the weekday). "
        "Optional argument timezone: an IANA time zone name such as Europe/Paris; default UTC."
    )
    params_schema = tool_params_schema(
        {
            "timezone": {
                "type": "string",
                "maxLength": MAX_ZONE_CHARS,
                "description": "IANA time zone used when the `timezone` input is not given",
                "default": DEFAULT_TIMEZONE,
            }
        }
    )
    tool_mode = True

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.default_zone = zone(params.get("timezone", DEFAULT_TIMEZONE))

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(inputs=("timezone",), default_input="timezone", outputs=("text",), default_output="text")

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        if "timezone" not in params:
            return []
        try:
            zone(params["timezone"])
        except ComponentError as e:
            return [Problem(f"{path}/timezone", "unknown_timezone", str(e))]
        return []

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        default = params.get("timezone", DEFAULT_TIMEZONE)
        timezone = {
            "type": "string",
            "maxLength": MAX_ZONE_CHARS,
            "description": f"IANA time zone name, e.g. Europe/Paris or America/New_York (default {default})",
        }
        return arguments_schema({"timezone": timezone})

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        name = to_text(inputs.get("timezone")).strip()
        return {"text": describe_now(zone(name) if name else self.default_zone)}
