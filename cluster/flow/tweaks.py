"""Tweaks: per-call overrides of node params, off unless the flow's `api.tweaks` lists what may change.

    {"api": {"tweaks": {"prompt": ["template"], "llm": ["temperature", "system"]}}}

A caller then sends `{"llm": {"temperature": 0.9}}` with a run. Validation (`tweak_problems`) refuses an
allow-list naming a node the flow lacks, a param its component does not take, or a param that decides
what the node reaches outside the flow: `provider`, `base_url`, any param that names a secret, an
address or an operator service (by what the component declares in `Component.outbound`, by name, or by
its schema's `format`). Those stay the operator's and the flow author's, whatever a caller sends.

`check_tweaks` checks a caller's tweaks against the allow-list; `apply_tweaks` returns the document with
them applied, which must then be validated like any document (see `cluster.engine.tweaks`).

>>> from cluster.flow.model import parse_api
>>> api = parse_api({"tweaks": {"llm": ["temperature"]}})
>>> check_tweaks(api, {"llm": {"temperature": 0.5}})
{'llm': {'temperature': 0.5}}
>>> apply_tweaks({"nodes": [{"id": "llm", "type": "LLM"}]}, {"llm": {"temperature": 0.5}})
{'nodes': [{'id': 'llm', 'type': 'LLM', 'params': {'temperature': 0.5}}]}
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from cluster.components.base import Component
from cluster.errors import InvalidTweaks, Problem, TweakNotAllowed
from cluster.flow.model import Flow, FlowApi
from cluster.flow.schemacheck import pointer

logger = logging.getLogger(__name__)

Tweaks = dict[str, dict[str, Any]]

# Never tweakable, whatever the component declares: they choose whom a node talks to.
FIXED_PARAMS = frozenset({"provider", "base_url"})
# Words of a param name (snake_case or camelCase) that mark a secret's name or an address.
_SECRET_WORDS = frozenset(
    {"env", "secret", "secrets", "password", "passwd", "token", "credential", "credentials", "apikey", "auth"}
)
_ADDRESS_WORDS = frozenset(
    {"url", "urls", "uri", "uris", "endpoint", "endpoints", "host", "hosts", "hostname", "domain", "domains"}
    | {"proxy", "address", "addresses", "server", "servers"}
)
_ADDRESS_FORMATS = frozenset(
    {"uri", "uri-reference", "uri-template", "iri", "iri-reference", "hostname", "idn-hostname"}
    | {"ipv4", "ipv6"}
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_REASONS = {
    "secret": "it names a secret",
    "url": "it is an address the node connects to",
    "service": "it chooses a service the operator configures",
    "provider": "it chooses the model provider, and with it where the node connects",
}


def _words(name: str) -> set[str]:
    """The lower-cased words of a param name, snake_case or camelCase.

    >>> sorted(_words("apiKeyEnv")), sorted(_words("allowed_domains"))
    (['api', 'env', 'key'], ['allowed', 'domains'])
    """
    return {word.lower() for word in _WORD.findall(name)}


def _declared_uses(cls: type[Component], params: Mapping[str, Any]) -> dict[str, str]:
    """param -> kind of what the component declares these params make it use outside the flow."""
    try:
        uses = cls.outbound(params)
    except Exception:  # reported by the node's own checks (component_error); names and schema still apply
        logger.debug("outbound() of %s failed while checking tweaks", cls.type_name, exc_info=True)
        return {}
    return {use.param.split("/", 1)[0]: use.kind for use in uses}


def fixed_reason(cls: type[Component], param: str, params: Mapping[str, Any]) -> str | None:
    """Why `param` of a node of `cls` (with these params) may never be tweaked, or None if it may.

    >>> from cluster.components.llm import LLM
    >>> fixed_reason(LLM, "api_key_env", {}), fixed_reason(LLM, "temperature", {})
    ('it names a secret', None)
    """
    if param == "provider":
        return _REASONS["provider"]
    kind = _declared_uses(cls, params).get(param)
    if kind is not None:
        return _REASONS.get(kind, _REASONS["url"])
    words = _words(param)
    if words & _SECRET_WORDS or {"api", "key"} <= words:
        return _REASONS["secret"]
    if param in FIXED_PARAMS or words & _ADDRESS_WORDS:
        return _REASONS["url"]
    schema = _properties(cls).get(param)
    if isinstance(schema, Mapping):
        pattern = schema.get("pattern")
        if schema.get("format") in _ADDRESS_FORMATS or (
            isinstance(pattern, str) and pattern.lstrip("^").startswith("http")
        ):
            return _REASONS["url"]
    return None


def _properties(cls: type[Component]) -> Mapping[str, Any]:
    schema = cls.params_schema
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    return properties if isinstance(properties, Mapping) else {}


def tweak_problems(
    tweaks: Mapping[str, Sequence[str]],
    flow: Flow,
    index_of: Mapping[str, int],
    classes: Sequence[type[Component] | None],
) -> list[Problem]:
    """The problems of a schema-valid `api.tweaks` allow-list, at `/api/tweaks/<node>[/<i>]`.

    Codes: `unknown_node` (no node has that id), `unknown_param` (its component has no such param) and
    `tweak_not_allowed` (a param that is never tweakable). Nodes of unknown type are skipped: their
    `unknown_type` problem is reported already."""
    problems: list[Problem] = []
    for node_id, params in tweaks.items():
        index = index_of.get(node_id)
        if index is None:
            close = difflib.get_close_matches(node_id, list(index_of), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"api.tweaks names node {node_id!r}, which is not a node of this flow{hint}"
            problems.append(Problem(pointer("api", "tweaks", node_id), "unknown_node", message))
            continue
        cls = classes[index]
        if cls is None:
            continue
        node_params = flow.nodes[index].params
        known = _properties(cls)
        for i, param in enumerate(params):
            at = pointer("api", "tweaks", node_id, i)
            if param not in known:
                listed = ", ".join(sorted(known)) or "none"
                message = f"{cls.type_name} node {node_id!r} has no param {param!r} (its params: {listed})"
                problems.append(Problem(at, "unknown_param", message))
                continue
            reason = fixed_reason(cls, param, node_params)
            if reason is not None:
                message = f"param {param!r} of node {node_id!r} is never tweakable: {reason}"
                problems.append(Problem(at, "tweak_not_allowed", message))
    return problems


def _listing(api: FlowApi) -> str:
    return ", ".join(f"{node}.{param}" for node in sorted(api.tweaks) for param in sorted(api.tweaks[node]))


def _refuse(api: FlowApi, node: str, param: str) -> TweakNotAllowed:
    what = f"param {param!r} of node {node!r}"
    if not api.tweaks_on:
        message = f"tweaks are off for this flow (its document lists no api.tweaks); cannot tweak {what}"
    else:
        which = "" if node in api.tweaks else " (the node takes no tweaks)"
        message = f"tweaking {what} is not allowed{which}; this flow allows tweaking: {_listing(api)}"
    return TweakNotAllowed(message, node=node, param=param, tweakable=api.tweaks)


def check_tweaks(api: FlowApi, tweaks: Any) -> Tweaks:
    """The caller's tweaks (`{node id: {param: value}}`, or None) as a plain dict without empty entries,
    if the allow-list permits every one of them. Raises TweakNotAllowed (422) for a param the flow does
    not list, and InvalidTweaks (422) for a malformed value: not an object of objects, or values JSON
    cannot hold."""
    if tweaks is None:
        return {}
    if not isinstance(tweaks, Mapping):
        raise InvalidTweaks(f"tweaks must be an object of node id -> {{param: value}}, not {_kind(tweaks)}")
    checked: Tweaks = {}
    for node, params in tweaks.items():
        if not isinstance(node, str):
            raise InvalidTweaks(f"tweaks are keyed by node id (a string), not {_kind(node)}")
        if not isinstance(params, Mapping):
            message = f"tweaks of node {node!r} must be an object of param -> value, not {_kind(params)}"
            raise InvalidTweaks(message)
        allowed = api.tweaks.get(node)
        for param in params:
            if not isinstance(param, str):
                raise InvalidTweaks(f"tweaks of node {node!r} are keyed by param name, not {_kind(param)}")
            if allowed is None or param not in allowed:
                raise _refuse(api, node, param)
        if params:
            checked[node] = dict(params)
    try:
        orjson.dumps(checked)
    except TypeError as e:  # orjson.JSONEncodeError is a TypeError
        raise InvalidTweaks(f"tweak values must be JSON values: {e}") from e
    return checked


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def apply_tweaks(document: Mapping[str, Any], tweaks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A deep copy of a (valid) document with each tweaked node's params replaced by the tweak's value
    (added when the node did not set them). Neither argument is changed; the result shares nothing with
    them. Raises InvalidTweaks for a node the document does not have, or values JSON cannot hold.
    Tweaks are not checked here: call `check_tweaks` first, then validate the result."""
    try:
        copy: dict[str, Any] = orjson.loads(orjson.dumps(document))
        values: Tweaks = orjson.loads(orjson.dumps(tweaks))
    except TypeError as e:
        raise InvalidTweaks(f"tweak values must be JSON values: {e}") from e
    nodes = {raw["id"]: raw for raw in copy.get("nodes", ())}
    for node, params in values.items():
        raw = nodes.get(node)
        if raw is None:
            raise InvalidTweaks(f"the flow has no node {node!r} to tweak")
        raw["params"] = {**raw.get("params", {}), **params}
    return copy


def check_reach(original: Flow, tweaked: Flow, classes: Sequence[type[Component]], tweaks: Tweaks) -> None:
    """Raise TweakNotAllowed if the tweaks change what a node of `tweaked` (valid, built of `classes`)
    declares it uses outside the flow (`Component.outbound`) compared to the same node of `original`."""
    for node, cls in zip(tweaked.nodes, classes, strict=True):
        if node.id not in tweaks:
            continue
        before = original.nodes[node.index].params
        uses = cls.outbound(before)
        if cls.outbound(node.params) == uses:
            continue
        changing = [p for p in sorted(tweaks[node.id]) if cls.outbound({**before, p: node.params[p]}) != uses]
        param = (changing or sorted(tweaks[node.id]))[0]
        message = (
            f"tweaking param {param!r} of node {node.id!r} would change what it reaches outside the flow"
        )
        raise TweakNotAllowed(message, node=node.id, param=param, tweakable=original.api.tweaks)


class FixedRegistry:
    """The component classes a flow was validated with, by node type (a ComponentRegistry): its tweaked
    document is checked and built with exactly these, whatever the process's registry holds by then."""

    def __init__(self, flow: Flow, classes: Sequence[type[Component]]) -> None:
        self._by_type = {node.type: cls for node, cls in zip(flow.nodes, classes, strict=True)}

    def get(self, type_name: str) -> type[Component] | None:
        return self._by_type.get(type_name)

    def names(self) -> list[str]:
        return sorted(self._by_type)

    def suggest(self, name: str) -> str | None:
        return None


def source_document(flow: Flow) -> dict[str, Any]:
    """The runnable part of a flow's document, rebuilt from its model: no examples (a variant serves
    runs, it is never a version to check) and no editor metadata. Shares params with the model."""
    nodes = [
        {"id": n.id, "type": n.type, "params": dict(n.params)}
        | ({"timeout_s": n.timeout_s} if n.timeout_s is not None else {})
        for n in flow.nodes
    ]
    edges = [
        {"source": e.source, "target": e.target}
        | ({"source_output": e.source_output} if e.source_output is not None else {})
        | ({"target_input": e.target_input} if e.target_input is not None else {})
        for e in flow.edges
    ]
    tweaks = {node: sorted(params) for node, params in flow.api.tweaks.items()}
    api = {"tweaks": tweaks, "version_selection": flow.api.version_selection}
    named = {"name": flow.name} if flow.name is not None else {}
    return named | {"description": flow.description, "nodes": nodes, "edges": edges, "api": api}
