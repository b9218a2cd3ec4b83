"""The OpenAPI 3.1 description of the control API, written by hand to match `control.http.api.build_routes`.

Served at ``/openapi.json`` to any authenticated principal (viewer and up); a test checks that every
route is described and nothing else is.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (bad JSON, wrong field type, unknown field, bad hash or name)",
        401: "Missing or invalid bearer token",
        403: "The principal's role may not do this",
        404: "Unknown flow, version, release generation or conversation (`conversation_not_found`)",
        409: "Generation conflict, ambiguous short hash, corrupt stored version, nothing to roll back, a "
        "two-phase rollout aborted (`rollout_aborted`, details.failures: each replica and why) or in "
        "progress (`rollout_in_progress`), `version_removed` (by gc, meanwhile), or a canary conflict "
        "(no_release, no_canary, canary_running, canary_is_stable)",
        413: "Request body larger than the configured limit",
        422: "The flow document is invalid (every problem is listed in details.problems), or a bad "
        "conversation id, principal or user id (`invalid_session_id`, `invalid_request_key`)",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in (401, 403, *statuses)}


def _op(summary: str, ok: dict[str, Any], *errors: int, role: str = "viewer", **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Requires the {role} role or higher.",
        "responses": {"200": ok, **_errors(*errors)},
    }
    op.update(extra)
    return op


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = False) -> Any:
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


FLOW_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}
NAME = _param("name", "path", "Flow name", FLOW_NAME, True)
HASH = {"type": "string", "pattern": "^[0-9a-f]{8,64}$", "description": "Full sha256 or a unique prefix (8+)"}
LIMIT = _param(
    "limit", "query", "Maximum entries (1-1000)", {"type": "integer", "minimum": 1, "maximum": 1000}
)
MESSAGE = [
    _param("X-Flowfleet-Message", "header", "Why (recorded in history and audit)", {"type": "string"}),
    _param("message", "query", "Why, when a header is inconvenient", {"type": "string"}),
]
OBJECT = {"type": "object"}
ACTIONS = ["activate", "rollback", "canary_start", "canary_set", "canary_promote", "canary_abort"]
ID, TEXT = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"}, {"type": "string"}
CONVERSATION = [
    _param("id", "path", "Conversation (session) id", ID, True),
    _param("principal", "query", 'The principal it is scoped by (default "-": anonymous)', TEXT),
]
# Two-phase cutover options of activate / rollback (docs/rollout.md).
CUTOVER: dict[str, dict[str, Any]] = {
    "prepare": {"type": "boolean", "description": "Two-phase prepare/commit (default true)"},
    "force": {"type": "boolean", "description": "Commit even if replicas NACK or time out (audited)"},
    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 300, "description": "Prepare timeout"},
}
PERCENT = {"type": "number", "minimum": 0, "maximum": 100}
GENERATION = {"type": "integer", "minimum": 0}
FINISH_BODY = {"required": False, "content": {JSON: {"schema": {
    "type": "object", "additionalProperties": False, "properties": {"expected_generation": GENERATION},
}}}}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message", "details"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "details": OBJECT},
    },
    "Release": {
        "type": "object",
        "properties": {
            "flow": {"type": "string"},
            "hash": {"type": "string"},
            "generation": {"type": "integer"},
            "previous_hash": {"type": ["string", "null"]},
            "activated_by": {"type": "string"},
            "activated_at": {"type": "number"},
            "reason": {"type": "string"},
            "action": {
                "type": "string",
                "enum": ACTIONS,
            },
            "canary_hash": {"type": ["string", "null"]},
            "canary_percent": {"type": "number"},
            "canary_started_at": {"type": ["number", "null"]},
            "canary_by": {"type": ["string", "null"]},
            "unpin_generation": {"type": "integer"},
            "rollout": {
                "type": ["object", "null"],
                "description": "What the cutover did (activate, rollback)",
            },
        },
    },
    "PublishResult": {
        "type": "object",
        "properties": {
            "flow": {"type": "string"},
            "hash": {"type": "string"},
            "created": {"type": "boolean"},
            "release": {"oneOf": [_ref("Release"), {"type": "null"}]},
        },
    },
}

ROUTES: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            "summary": "Liveness and Redis reachability (no authentication)",
            "security": [],
            "responses": {"200": _json(OBJECT, "Healthy"), "503": _json(OBJECT, "Redis unreachable")},
        }
    },
    "/metrics": {"get": _op("Prometheus metrics", {"description": "Prometheus text format"})},
    "/openapi.json": {"get": _op("This document", _json(OBJECT, "OpenAPI 3.1"))},
    "/v1/flows": {"get": _op("Every flow with its release record", _json(OBJECT, "{flows: [...]}"))},
    "/v1/flows/{name}": {
        "parameters": [NAME],
        "get": _op("Release record and recent versions", _json(OBJECT, "{flow, release, versions}"),
                   400, 404),
    },
    "/v1/flows/{name}/versions": {
        "parameters": [NAME],
        "post": _op(
            "Validate, dry-run the document's tests and store a version; optionally activate it",
            _json(_ref("PublishResult"), "Identical content was already stored"),
            400, 404, 409, 413, 422,
            role="deployer",
            parameters=[
                _param("activate", "query", "Also activate the version", {"type": "boolean"}),
                _param("expected_generation", "query", "CAS for the activation", {"type": "integer"}),
                *[_param(k, "query", v["description"], {"type": v["type"]}) for k, v in CUTOVER.items()],
                *MESSAGE,
            ],
            requestBody={"required": True, "content": {JSON: {"schema": OBJECT}}},
        ),
    },
    "/v1/flows/{name}/versions/{hash}": {
        "parameters": [NAME, _param("hash", "path", "Version", HASH, True)],
        "get": _op("A stored version: document and metadata", _json(OBJECT, "{flow, hash, meta, document}"),
                   400, 404, 409),
    },
    "/v1/flows/{name}/activate": {
        "parameters": [NAME],
        "post": _op(
            "Make a stored version current (verified and compiled first)",
            _json(_ref("Release"), "The new release record"),
            400, 404, 409, 413, 422,
            role="deployer",
            parameters=MESSAGE,
            requestBody={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["hash"], "additionalProperties": False,
                "properties": {"hash": HASH, "expected_generation": {"type": "integer", "minimum": 0},
                               "unpin": {"type": "boolean"}, **CUTOVER},
            }}}},
        ),
    },
    "/v1/flows/{name}/rollback": {
        "parameters": [NAME],
        "post": _op(
            "Activate an earlier version as a new generation (default: the previous release)",
            _json(_ref("Release"), "The new release record"),
            400, 404, 409, 413, 422,
            role="deployer",
            parameters=MESSAGE,
            requestBody={"required": False, "content": {JSON: {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"to_generation": {"type": "integer", "minimum": 0}, "to_hash": HASH,
                               "unpin": {"type": "boolean"}, **CUTOVER},
            }}}},
        ),
    },
    "/v1/flows/{name}/canary": {
        "parameters": [NAME],
        "get": _op("Stable and canary side by side: runs, errors, error rate, p50/p95 latency",
                   _json(OBJECT, "{flow, generation, epoch, replicas, stable, canary, guard}"),
                   400, 404, 409),
        "post": _op(
            "Start a canary: run a stored version for a percentage of request keys",
            _json(_ref("Release"), "The new release record"),
            400, 404, 409, 413, 422,
            role="deployer",
            parameters=MESSAGE,
            requestBody={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["hash", "percent"], "additionalProperties": False,
                "properties": {"hash": HASH, "percent": PERCENT, "expected_generation": GENERATION},
            }}}},
        ),
    },
    "/v1/flows/{name}/canary/percent": {
        "parameters": [NAME],
        "post": _op(
            "Change the canary's percentage", _json(_ref("Release"), "The new release record"),
            400, 404, 409, 413, role="deployer", parameters=MESSAGE,
            requestBody={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["percent"], "additionalProperties": False,
                "properties": {"percent": PERCENT, "expected_generation": GENERATION},
            }}}},
        ),
    },
    "/v1/flows/{name}/canary/promote": {
        "parameters": [NAME],
        "post": _op(
            "Make the canary the current release", _json(_ref("Release"), "The new release record"),
            400, 404, 409, 413, 422, role="deployer", parameters=MESSAGE, requestBody=FINISH_BODY,
        ),
    },
    "/v1/flows/{name}/canary/abort": {
        "parameters": [NAME],
        "post": _op(
            "Stop the canary", _json(_ref("Release"), "The new release record"),
            400, 404, 409, 413, role="deployer", parameters=MESSAGE, requestBody=FINISH_BODY,
        ),
    },
    "/v1/flows/{name}/history": {
        "parameters": [NAME],
        "get": _op("Releases, newest first", _json(OBJECT, "{flow, releases}"), 400, 404, parameters=[LIMIT]),
    },
    "/v1/flows/{name}/diff": {
        "parameters": [NAME],
        "get": _op(
            "Node, edge and param level differences between two versions",
            _json(OBJECT, "{flow, from, to, diff}"),
            400, 404, 409,
            parameters=[_param("from", "query", "Old version", HASH, True),
                        _param("to", "query", "New version", HASH, True)],
        ),
    },
    "/v1/flows/{name}/rollout": {
        "parameters": [NAME],
        "get": _op(
            "Convergence on the current release (replicas current / behind / failed) and the last rollout",
            _json(OBJECT, "{flow, hash, generation, current, total, done, failed, replicas, rollout}"),
            400, 404,
        ),
    },
    "/v1/flows/{name}/conversations": {
        "parameters": [NAME],
        "get": _op("The flow's conversations (principal, id, last_active), most recent first",
                   _json(OBJECT, "{flow, conversations}"), 400, 404, parameters=[LIMIT]),
    },
    "/v1/flows/{name}/conversations/{id}": {
        "parameters": [NAME, *CONVERSATION],
        "get": _op("A conversation's messages (role, content, at, sender), oldest first",
                   _json(OBJECT, "{flow, principal, id, messages}"), 400, 404, 422),
        "delete": _op("Delete a conversation and its session's version pin (audited)",
                      _json(OBJECT, "{deleted: {flow, principal, id}}"), 400, 404, 422, role="deployer"),
    },
    "/v1/users/{user_id}/conversations": {
        "parameters": [_param("user_id", "path", "The runs' user_id (1-256 characters)", TEXT, True)],
        "delete": _op("Forget a user: delete their conversations in every flow, with the pins (audited)",
                      _json(OBJECT, "{user (its digest), deleted: [{flow, principal, id}]}"), 422,
                      role="deployer"),
    },
    "/v1/fleet": {"get": _op("Live replicas and what they run", _json(OBJECT, "{replicas, releases, rows}"))},
    "/v1/audit": {
        "get": _op("Audit entries, newest first", _json(OBJECT, "{entries}"), 400,
                   parameters=[_param("flow", "query", "Only this flow", {"type": "string"}), LIMIT])
    },
    "/v1/gc": {
        "post": _op("Delete old versions nothing references (release, history, rollout, session pins)",
                    _json(OBJECT, "Removed (dry run: would remove) / kept"), 400, role="admin",
                    parameters=[_param("dry_run", "query", "List only", {"type": "boolean"})]),
    },
}  # fmt: skip

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "flowfleet control plane", "version": "1"},
    "security": [{"bearer": []}],
    "paths": ROUTES,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}

ROUTES["/v1/flows/{name}/versions"]["post"]["responses"]["201"] = _json(
    _ref("PublishResult"), "Stored a new version"
)
