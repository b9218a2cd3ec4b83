"""Every control route's authentication (none / wrong / insufficient role) and the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from cluster.settings import Settings
from control.http.api import build_routes, create_app
from control.http.auth import AuthConfigError
from control.http.openapi import OPENAPI
from tests.control_support import ADMIN_TOKEN, DEPLOYER_TOKEN, VIEWER_TOKEN, bearer, write_tokens_file
from tests.redis_server import RedisServer

# (method, path, token of the weakest role that is still refused, or None when every role may)
ROUTES = [
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("GET", "/v1/flows", None),
    ("GET", "/v1/flows/qa", None),
    ("POST", "/v1/flows/qa/versions", VIEWER_TOKEN),
    ("GET", "/v1/flows/qa/versions/0123456789ab", None),
    ("POST", "/v1/flows/qa/activate", VIEWER_TOKEN),
    ("POST", "/v1/flows/qa/rollback", VIEWER_TOKEN),
    ("GET", "/v1/flows/qa/history", None),
    ("GET", "/v1/flows/qa/diff?from=0123456789ab&to=0123456789ab", None),
    ("GET", "/v1/flows/qa/rollout", None),
    ("GET", "/v1/flows/qa/canary", None),
    ("POST", "/v1/flows/qa/canary", VIEWER_TOKEN),
    ("POST", "/v1/flows/qa/canary/percent", VIEWER_TOKEN),
    ("POST", "/v1/flows/qa/canary/promote", VIEWER_TOKEN),
    ("POST", "/v1/flows/qa/canary/abort", VIEWER_TOKEN),
    ("GET", "/v1/fleet", None),
    ("GET", "/v1/audit", None),
    ("POST", "/v1/gc", DEPLOYER_TOKEN),
    ("GET", "/v1/flows/qa/conversations", None),
    ("GET", "/v1/flows/qa/conversations/s-1", None),
    ("DELETE", "/v1/flows/qa/conversations/s-1", VIEWER_TOKEN),
    ("DELETE", "/v1/users/u-1/conversations", VIEWER_TOKEN),
]


@pytest.fixture
async def http(redis_server: RedisServer, namespace: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        redis_url=redis_server.url,
        namespace=namespace,
        admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)),
    )
    app = create_app(settings)  # opens and closes its own Redis client
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:
            yield client


@pytest.mark.parametrize(("method", "path", "_refused"), ROUTES)
async def test_no_token_is_401_with_a_challenge(
    http: httpx.AsyncClient, method: str, path: str, _refused: str
) -> None:
    response = await http.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="flowfleet"'
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "_refused"), ROUTES)
async def test_wrong_token_is_401(http: httpx.AsyncClient, method: str, path: str, _refused: str) -> None:
    for header in ("Bearer not-a-token", f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN):
        response = await http.request(method, path, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert "www-authenticate" in response.headers


@pytest.mark.parametrize(("method", "path", "refused"), [r for r in ROUTES if r[2] is not None])
async def test_insufficient_role_is_403(
    http: httpx.AsyncClient, method: str, path: str, refused: str
) -> None:
    response = await http.request(method, path, headers=bearer(refused), json={})
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "forbidden" and body["details"]["required"] in ("deployer", "admin")


@pytest.mark.parametrize(("method", "path", "refused"), ROUTES)
async def test_sufficient_roles_get_past_authentication(
    http: httpx.AsyncClient, method: str, path: str, refused: str | None
) -> None:
    token = {None: VIEWER_TOKEN, VIEWER_TOKEN: DEPLOYER_TOKEN, DEPLOYER_TOKEN: ADMIN_TOKEN}[refused]
    response = await http.request(method, path, headers=bearer(token))
    assert response.status_code not in (401, 403), response.text


def test_the_app_refuses_to_start_without_tokens(redis_server: RedisServer) -> None:
    with pytest.raises(AuthConfigError, match="FLOWFLEET_ADMIN_TOKEN"):
        create_app(Settings(redis_url=redis_server.url))


async def test_openapi_describes_exactly_the_routes(http: httpx.AsyncClient) -> None:
    served = (await http.get("/openapi.json", headers=bearer(VIEWER_TOKEN))).json()
    assert served == OPENAPI
    assert served["openapi"].startswith("3.1")
    routes = {
        (method.lower(), route.path)
        for route in build_routes()
        if isinstance(route, Route)
        for method in (route.methods or set())
        if method != "HEAD"
    }
    described = {
        (method, path) for path, item in served["paths"].items() for method in item if method != "parameters"
    }
    assert described == routes
    assert {(m.lower(), p.split("?")[0]) for m, p, _ in ROUTES} | {("get", "/healthz")} == {
        (
            m,
            p.replace("{name}", "qa")
            .replace("{hash}", "0123456789ab")
            .replace("{id}", "s-1")
            .replace("{user_id}", "u-1"),
        )
        for m, p in routes
    }
