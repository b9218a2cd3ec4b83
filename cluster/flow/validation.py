"""Validation of flow documents: limits, the JSON Schema, then the semantic rules of `cluster.flow.analysis`.

`validate` collects every problem and never raises; `check` raises FlowValidationError; `parse_document`
turns raw bytes into a value under the size and depth limits.

>>> [p.code for p in validate({"nodes": [{"id": "a"}]})]
['schema']
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from cluster.errors import FlowValidationError, Problem
from cluster.flow.schema import DOCUMENT_SCHEMA
from cluster.flow.schemacheck import SchemaChecker, pointer, shorten
from cluster.gcpause import paused_gc

if TYPE_CHECKING:
    from cluster.egress.policy import OutboundPolicy
    from cluster.flow.analysis import Analysis, ComponentRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile document from costing more than a clear error."""

    max_document_bytes: int = 1024 * 1024
    max_nodes: int = 5000
    max_edges: int = 20000
    # Applies to every string inside a node's params: templates, system prompts, retriever documents.
    max_template_chars: int = 100_000
    # Containers nested in containers; the document itself is depth 1.
    max_depth: int = 32
    max_tests: int = 100


DEFAULT_LIMITS = Limits()


_CONTAINERS = (dict, list, tuple)


def _exceeds_depth(value: Any, max_depth: int, budget: int) -> bool | None:
    """True if containers nest deeper than max_depth; None if more than `budget` containers had to be
    visited (only possible for an in-memory value far larger than any allowed document, or a value that
    contains itself). Walks level by level, without recursion."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        budget -= len(level)
        if budget < 0:
            return None
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below.extend([child for child in children if isinstance(child, _CONTAINERS)])
        level = below
    return False


def _structure_problems(document: Any, limits: Limits) -> tuple[list[Problem], bytes]:
    """Depth and size, checked before anything that recurses or scales with the document; also returns
    the document's compact JSON (a private copy for the analysis to parse)."""
    # Every JSON container takes at least two bytes, so more containers than half the byte limit means
    # the document is too large whatever its depth.
    deep = _exceeds_depth(document, limits.max_depth, limits.max_document_bytes // 2)
    if deep is None:
        return [Problem("", "too_large", f"document is larger than {limits.max_document_bytes} bytes")], b""
    if deep:
        return [Problem("", "too_deep", f"document nests deeper than {limits.max_depth} levels")], b""
    try:
        data = orjson.dumps(document)
    except (TypeError, orjson.JSONEncodeError) as e:
        return [Problem("", "not_json", shorten(f"document is not a JSON value: {e}"))], b""
    if len(data) > limits.max_document_bytes:
        return [_too_large(len(data), limits)], b""
    return [], data


def _count_problems(document: Any, limits: Limits) -> list[Problem]:
    if not isinstance(document, dict):
        return []
    problems = []
    for key, limit, code in (
        ("nodes", limits.max_nodes, "too_many_nodes"),
        ("edges", limits.max_edges, "too_many_edges"),
        ("tests", limits.max_tests, "too_many_tests"),
    ):
        items = document.get(key)
        if isinstance(items, list) and len(items) > limit:
            problems.append(Problem(pointer(key), code, f"{len(items)} {key}; the limit is {limit}"))
    return problems


_DOCUMENT = SchemaChecker(DOCUMENT_SCHEMA, "schema")


def _long_strings(params: Any, limit: int) -> Iterator[tuple[tuple[str | int, ...], int]]:
    """(relative path, length) of every string in `params` longer than `limit`."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(params, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if len(value) > limit:
                yield path, len(value)
        elif isinstance(value, dict):
            stack.extend((v, (*path, k)) for k, v in value.items() if not isinstance(v, _SHORT))
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value) if not isinstance(v, _SHORT))


# Values that cannot hold a long string; skipping them keeps the walk cheap.
_SHORT = (bool, int, float, type(None))


def _length_problems(document: dict[str, Any], data: bytes, limits: Limits) -> list[Problem]:
    """Strings in params over the limit. A string of n characters takes at least n bytes of JSON, so
    JSON (`data`: the whole document's) no longer than the limit holds no such string."""
    limit = limits.max_template_chars
    if len(data) <= limit:
        return []
    problems = [
        Problem(
            pointer("nodes", i, "params", *path), "too_long", f"{length} characters; the limit is {limit}"
        )
        for i, node in enumerate(document["nodes"])
        if "params" in node and len(orjson.dumps(node["params"])) > limit
        for path, length in _long_strings(node["params"], limit)
    ]
    return sorted(problems, key=lambda p: p.path)


def _analyse(
    document: Any, registry: ComponentRegistry | None, limits: Limits | None, policy: OutboundPolicy | None
) -> tuple[list[Problem], Analysis | None]:
    # Imported here: analysis needs the component registry, which imports every built-in component.
    from cluster.components.registry import default_registry
    from cluster.flow.analysis import analyse

    limits = limits or DEFAULT_LIMITS
    problems, data = _structure_problems(document, limits)
    problems = problems or _count_problems(document, limits)
    if problems:
        return problems, None
    problems = _DOCUMENT.problems(document)
    if problems:
        return problems, None
    problems = _length_problems(document, data, limits)
    if problems:
        return problems, None
    try:
        return analyse(orjson.loads(data), registry if registry is not None else default_registry(), policy)
    except Exception as e:  # a bug here or in a plugin must still come out as a problem, not a crash
        logger.exception("validation failed unexpectedly")
        return [Problem("", "internal_error", shorten(f"validation failed unexpectedly: {e!r}"))], None


def validate(
    document: Any,
    *,
    registry: ComponentRegistry | None = None,
    limits: Limits | None = None,
    policy: OutboundPolicy | None = None,
) -> list[Problem]:
    """Every problem of the document (empty when it is valid), the secrets and addresses its nodes use
    checked against `policy` (default: the default OutboundPolicy). Never raises for any input value."""
    with paused_gc():
        return _analyse(document, registry, limits, policy)[0]


def check(
    document: Any,
    *,
    registry: ComponentRegistry | None = None,
    limits: Limits | None = None,
    policy: OutboundPolicy | None = None,
) -> None:
    """Raise FlowValidationError carrying every problem, or return None for a valid document."""
    problems = validate(document, registry=registry, limits=limits, policy=policy)
    if problems:
        raise FlowValidationError(problems)


def check_and_analyse(
    document: Any,
    *,
    registry: ComponentRegistry | None = None,
    limits: Limits | None = None,
    policy: OutboundPolicy | None = None,
) -> Analysis:
    """Like `check`, returning what the compiler needs (ports, bound edges, order) to avoid redoing it."""
    with paused_gc():
        problems, analysis = _analyse(document, registry, limits, policy)
    if problems or analysis is None:
        raise FlowValidationError(problems)
    return analysis


def parse_document(raw: bytes | str, limits: Limits | None = None) -> Any:
    """Parse JSON text under the size and depth limits; raises FlowValidationError (one problem)."""
    limits = limits or DEFAULT_LIMITS
    if isinstance(raw, str):
        if len(raw) > limits.max_document_bytes:
            raise FlowValidationError([_too_large(len(raw), limits)])
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > limits.max_document_bytes:
        raise FlowValidationError([_too_large(len(raw), limits)])
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some editors write
        raw = raw[3:]
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e) or "recursion" in str(e):
            problem = Problem("", "too_deep", f"document nests deeper than {limits.max_depth} levels")
        else:
            problem = Problem("", "invalid_json", shorten(f"not valid JSON: {e}"))
        raise FlowValidationError([problem]) from e
    if _exceeds_depth(document, limits.max_depth, limits.max_document_bytes):
        raise FlowValidationError(
            [Problem("", "too_deep", f"document nests deeper than {limits.max_depth} levels")]
        )
    return document


def _too_large(size: int, limits: Limits) -> Problem:
    return Problem(
        "", "too_large", f"document is {size} bytes; the limit is {limits.max_document_bytes} bytes"
    )
