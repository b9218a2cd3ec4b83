"""The one error hierarchy of flowfleet; the HTTP layer and the CLI map these to status and exit codes."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow document, located by a JSON pointer.

    >>> str(Problem("/nodes/3/params/template", "unknown_variable", "unknown variable {qustion}"))
    '/nodes/3/params/template: unknown variable {qustion}'
    """

    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


class FlowfleetError(Exception):
    """Base of every error flowfleet raises on purpose.

    `code` is the stable machine-readable name used in HTTP error bodies; `http_status` and `exit_code`
    say how the API and the CLI report it.
    """

    code = "error"
    http_status = 400
    exit_code = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message


class FlowValidationError(FlowfleetError):
    """A document failed validation; carries every problem found, not only the first."""

    code = "invalid_flow"
    http_status = 422

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = str(self.problems[0]) if self.problems else "invalid flow"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more, problems=[p.as_dict() for p in self.problems])


class RunInputError(FlowfleetError):
    """The inputs given to a run are unusable (missing required input, wrong type)."""

    code = "invalid_inputs"
    http_status = 422


class InvalidTweaks(FlowfleetError):
    """Per-call tweaks that are malformed, or whose values the flow's rules refuse (then `details`
    carries the validation problems, each naming the tweaked `node` and `param` when it can)."""

    code = "invalid_tweaks"
    http_status = 422


class TweakNotAllowed(InvalidTweaks):
    """A tweak of a param the flow's `api.tweaks` does not list, or tweaks for a flow that lists none.

    `details`: the `node` and `param` refused, and `tweakable` (node id -> the params callers may
    tweak; empty when tweaks are off for the flow).
    """

    code = "tweak_not_allowed"

    def __init__(
        self, message: str, *, node: str, param: str, tweakable: Mapping[str, Collection[str]]
    ) -> None:
        listed = {node_id: sorted(params) for node_id, params in sorted(tweakable.items())}
        super().__init__(message, node=node, param=param, tweakable=listed)
        self.node = node
        self.param = param


class RunTimeout(FlowfleetError):
    """A run, or one node of it, exceeded its time budget."""

    code = "run_timeout"
    http_status = 504

    def __init__(self, message: str, *, node_id: str | None = None, timeout_s: float) -> None:
        super().__init__(message, node_id=node_id, timeout_s=timeout_s)
        self.node_id = node_id
        self.timeout_s = timeout_s


class NodeFailed(FlowfleetError):
    """A node raised while running; the run fails with the node id and the reason."""

    code = "node_failed"
    http_status = 502

    def __init__(self, node_id: str, reason: str) -> None:
        super().__init__(f"node {node_id!r} failed: {reason}", node_id=node_id, reason=reason)
        self.node_id = node_id
        self.reason = reason


class ComponentError(FlowfleetError):
    """Raised by a component's run method for an expected failure (bad upstream reply, parse failure)."""

    code = "component_error"
    http_status = 502


class MissingSecret(FlowfleetError):
    """A version needs secrets this process does not have (never their values, only their names)."""

    code = "missing_secret"
    http_status = 422

    def __init__(self, names: Sequence[str], where: str = "this replica") -> None:
        self.names = tuple(names)
        listed = ", ".join(self.names)
        plural = "s" if len(self.names) > 1 else ""
        super().__init__(f"secret{plural} {listed} not set on {where}", secrets=list(self.names))


class MissingSearchProvider(FlowfleetError):
    """A version uses web search and this process has no search provider configured (like a missing
    secret, the replica's configuration is at fault, not the version)."""

    code = "missing_search_provider"
    http_status = 422


class FlowNotFound(FlowfleetError):
    """No flow of that name is known."""

    code = "flow_not_found"
    http_status = 404
    exit_code = 4

    def __init__(self, flow: str) -> None:
        super().__init__(f"flow {flow!r} not found", flow=flow)
        self.flow = flow


class VersionNotFound(FlowfleetError):
    """No stored version of the flow matches the hash or prefix."""

    code = "version_not_found"
    http_status = 404
    exit_code = 4

    def __init__(self, flow: str, digest: str) -> None:
        super().__init__(f"flow {flow!r} has no version {digest!r}", flow=flow, hash=digest)
        self.flow = flow
        self.digest = digest


class AmbiguousHash(FlowfleetError):
    """A short hash matches more than one stored version."""

    code = "ambiguous_hash"
    http_status = 409
    exit_code = 2

    def __init__(self, flow: str, prefix: str, matches: Sequence[str]) -> None:
        super().__init__(
            f"hash prefix {prefix!r} of flow {flow!r} matches {len(matches)} versions",
            flow=flow,
            prefix=prefix,
            matches=list(matches),
        )


class GenerationConflict(FlowfleetError):
    """Compare-and-set on the release generation failed: someone else activated first."""

    code = "generation_conflict"
    http_status = 409
    exit_code = 3

    def __init__(self, flow: str, expected: int, actual: int) -> None:
        super().__init__(
            f"flow {flow!r} is at generation {actual}, not the expected {expected}",
            flow=flow,
            expected_generation=expected,
            actual_generation=actual,
        )
        self.flow = flow
        self.expected = expected
        self.actual = actual


class CorruptBlob(FlowfleetError):
    """Stored bytes no longer hash to their content address; they are never announced or loaded."""

    code = "corrupt_blob"
    http_status = 409

    def __init__(self, flow: str, digest: str, actual: str) -> None:
        super().__init__(
            f"stored version {digest[:12]} of flow {flow!r} is corrupt (its bytes hash to {actual[:12]})",
            flow=flow,
            hash=digest,
            actual_hash=actual,
        )


class Unauthorized(FlowfleetError):
    """No credentials, or credentials that match no principal."""

    code = "unauthorized"
    http_status = 401
    exit_code = 5


class Forbidden(FlowfleetError):
    """The principal is known but its role may not do this."""

    code = "forbidden"
    http_status = 403
    exit_code = 5


class BadRequest(FlowfleetError):
    """A request that is malformed independently of any flow (bad JSON, missing field, too large)."""

    code = "bad_request"
    http_status = 400
    exit_code = 2


class Unavailable(FlowfleetError):
    """The server cannot take this request now, through no fault of the request (shutting down, at its
    limit, the version not loaded yet): a 503 with Retry-After; the same request may succeed later."""

    code = "unavailable"
    http_status = 503
    retry_after_s = 1

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code


def json_type(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words (messages never show Python type names).

    >>> [json_type(v) for v in (None, True, 1, 1.5, "x", [], {})]
    ['null', 'boolean', 'number', 'number', 'string', 'array', 'object']
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
