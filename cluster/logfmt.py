"""The one log format of every flowfleet process (control plane, replicas, CLI): one ``key=value`` line
per record, configured once by each entry point.

    ts=2026-11-25T21:40:00.123Z level=INFO logger=control.service msg="activate flow=qa version=ab12 ..."
"""

from __future__ import annotations

import logging
import time
from typing import Any


class KeyValueFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg="…"``; exceptions follow on the same record, newlines escaped."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        quoted = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'ts={ts} level={record.levelname} logger={record.name} msg="{quoted}"'


def logging_config(level: str, quiet: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dictConfig: every record to stderr as one key=value line; uvicorn's loggers propagate to it;
    `quiet` loggers only from WARNING up."""
    loggers: dict[str, Any] = {
        name: {"level": level, "handlers": [], "propagate": True}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    for name in quiet:
        loggers[name] = {"level": "WARNING", "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"kv": {"()": KeyValueFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "kv", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def logfmt_value(value: Any) -> str:
    """One value of a ``key=value`` line, quoted when it holds a space, a quote, '=' or a newline.

    >>> print(logfmt_value("ab12"), logfmt_value("two words"))
    ab12 "two words"
    """
    text = str(value)
    if text and not any(c in text for c in ' "=\n'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
