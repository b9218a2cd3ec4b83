"""The names flowfleet accepts for flows, namespaces and replicas (they end up inside Redis keys, URLs
and metric labels), shared by the flow language, the store and both servers."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import unquote

from cluster.errors import BadRequest

FLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class InvalidName(BadRequest):
    code = "invalid_name"


def check_flow_name(name: str) -> str:
    """Flow names are 1-128 characters of letters, digits, `_`, `.`, `-` (they end up inside keys)."""
    if not FLOW_NAME.match(name):
        raise InvalidName(
            f"invalid flow name {name!r}: use 1-128 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
            flow=name,
        )
    return name


# Both servers route a flow by its name in the path: `/v1/flows/{name}` and below.
FLOWS_PATH = "/v1/flows/"


def check_raw_flow_name(raw_path: bytes | None) -> None:
    """Refuse (InvalidName) a flow name holding `/` in a still percent-encoded request path.

    Routing reads the decoded path, where `/v1/flows/a%2Frun/run` is `/v1/flows/a/run/run` — no route,
    or, for `/v1/flows/x%2Fhistory`, the history of flow `x`: the client's name is only in the raw path.

    >>> check_raw_flow_name(b"/v1/flows/qa/run?x=%2F")
    >>> try:
    ...     check_raw_flow_name(b"/v1/flows/a%2Fhistory")
    ... except InvalidName as e:
    ...     print(e.code, e.details)
    invalid_name {'flow': 'a/history'}
    """
    path = (raw_path or b"").split(b"?", 1)[0].decode("latin-1")
    if not path.startswith(FLOWS_PATH):
        return
    name = unquote(path[len(FLOWS_PATH) :].split("/", 1)[0], errors="replace")
    if "/" in name:
        check_flow_name(name)


def unrouted_flow_name(path: str, templates: Iterable[str]) -> str | None:
    """For a (decoded) path no route matched: the flow name in it if one of the route `templates` had
    matched with a name holding `/` (the shortest such name), else None.

    >>> routes = ["/v1/flows/{name}", "/v1/flows/{name}/activate"]
    >>> unrouted_flow_name("/v1/flows/a/b/activate", routes), unrouted_flow_name("/v1/users/x", routes)
    ('a/b', None)
    """
    names = [m.group("name") for t in templates if (m := _template(t).fullmatch(path))]
    return min(names, key=len, default=None)


@functools.lru_cache(maxsize=256)
def _template(template: str) -> re.Pattern[str]:
    """A route template (`/v1/flows/{name}/versions/{hash}`) as a regex whose `name` may hold `/`."""
    parts = re.split(r"\{([^}]+)\}", template)
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        elif part == "name":
            pattern += "(?P<name>.+)"
        else:
            pattern += ".+" if part.endswith(":path") else "[^/]+"
    return re.compile(pattern)
