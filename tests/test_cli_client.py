"""control.cli.client: HTTP answers become FlowfleetErrors with the documented exit codes."""

from __future__ import annotations

import httpx
import pytest

from cluster.errors import Unauthorized
from control.cli.client import ApiClient, RemoteError, path


def client_answering(status: int, body: object = None, raw: bytes | None = None) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t"
        if raw is not None:
            return httpx.Response(status, content=raw)
        return httpx.Response(status, json=body)

    return ApiClient("http://control/", "t", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "exit_code"), [(400, 2), (401, 5), (403, 5), (404, 4), (409, 3), (413, 1), (422, 1), (503, 1)]
)
def test_status_to_exit_code(status: int, exit_code: int) -> None:
    with pytest.raises(RemoteError) as err:
        client_answering(status, {"error": "x", "message": "what went wrong", "details": {}}).get("/v1/flows")
    assert (err.value.status, err.value.exit_code, str(err.value)) == (status, exit_code, "what went wrong")


def test_every_validation_problem_is_on_the_one_line() -> None:
    problems = [{"path": "/nodes/0/type", "message": "unknown type"}, {"path": "", "message": "no output"}]
    body = {"error": "invalid_flow", "message": "first (and 1 more)", "details": {"problems": problems}}
    with pytest.raises(RemoteError) as err:
        client_answering(422, body).post("/v1/flows/qa/versions", content=b"{}")
    assert str(err.value) == "2 problems: /nodes/0/type: unknown type; /: no output"


def test_a_non_json_error_body_still_gives_a_message() -> None:
    with pytest.raises(RemoteError, match="HTTP 502"):
        client_answering(502, raw=b"<html>bad gateway</html>").get("/v1/flows")


def test_success_returns_the_json_body_and_sends_query_values_as_text() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    api = ApiClient("http://control", "t", transport=httpx.MockTransport(handler))
    assert api.post("/x", json={"a": 1}, params={"activate": True, "message": None, "n": 3}) == {"ok": True}
    assert str(seen[0].url) == "http://control/x?activate=true&n=3"
    assert seen[0].content == b'{"a":1}' and seen[0].headers["content-type"] == "application/json"


def test_no_token_is_refused_before_any_request() -> None:
    with pytest.raises(Unauthorized, match="FLOWFLEET_TOKEN"):
        ApiClient("http://control", None)


def test_path_segments_are_escaped() -> None:
    assert path("v1", "flows", "a.b", "versions", "x/y") == "/v1/flows/a.b/versions/x%2Fy"
