"""CurrentDate: ISO-8601 with weekday, in the zone asked for; unknown zones refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cluster.components.tools.current_date import WEEKDAYS, CurrentDate
from cluster.errors import ComponentError
from tests.component_helpers import build, problems_of, run

FORMAT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d) \((\w+)\)")


def parsed(text: str) -> datetime:
    """The moment `text` names, after checking its format and that the weekday is the date's."""
    match = FORMAT.fullmatch(text)
    assert match, text
    moment = datetime.fromisoformat(match[1])
    assert match[2] == WEEKDAYS[moment.weekday()]
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)
    return moment


async def test_utc_by_default() -> None:
    text = (await run(build(CurrentDate, {}), {}))["text"]
    assert parsed(text).utcoffset() == timedelta(0)
    assert "+00:00 (" in text


async def test_timezone_from_params_and_from_the_input() -> None:
    component = build(CurrentDate, {"timezone": "Asia/Kolkata"})
    assert "+05:30 (" in (await run(component, {}))["text"]
    assert "+05:30 (" in (await run(component, {"timezone": None}))["text"]
    text = (await run(component, {"timezone": "America/New_York"}))["text"]
    assert parsed(text).utcoffset() == datetime.now(ZoneInfo("America/New_York")).utcoffset()


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "America", "../../etc/passwd", "/etc/localtime", "utc", "x" * 300]
)
async def test_unknown_zone(zone: str) -> None:
    with pytest.raises(ComponentError, match="unknown time zone"):
        await run(build(CurrentDate, {}), {"timezone": zone})


def test_params_and_tool_mode() -> None:
    problems = problems_of(CurrentDate, {"timezone": "Europe/Pariss"})
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/timezone", "unknown_timezone")]
    assert problems_of(CurrentDate, {"timezone": "Europe/Paris", "tool_name": "now"}) == []
    ports = CurrentDate.ports({})
    assert ports.inputs == ("timezone",) and not ports.required and ports.default_output == "text"
    schema = CurrentDate.tool_parameters({})
    assert list(schema["properties"]) == ["timezone"] and schema["required"] == []
    assert schema["additionalProperties"] is False
