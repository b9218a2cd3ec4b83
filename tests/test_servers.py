"""control.cli.servers: the key=value log format configured by `flowfleet control`."""

from __future__ import annotations

import logging
import re
import sys

from control.cli.servers import KeyValueFormatter


def test_one_line_per_record_with_quotes_and_newlines_escaped() -> None:
    record = logging.LogRecord("control.service", logging.INFO, __file__, 1, 'say "%s"\nnext', ("hi",), None)
    line = KeyValueFormatter().format(record)
    assert "\n" not in line
    ts, rest = line.split(" ", 1)
    assert re.fullmatch(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts), ts
    assert rest == 'level=INFO logger=control.service msg="say \\"hi\\"\\nnext"'


def test_exceptions_stay_on_the_record_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = KeyValueFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in line
