"""URLFetch against a real loopback server: content types, limits, redirects checked hop by hop against
`allowed_domains`, upstream bodies of errors kept out, and dry runs that fetch nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from cluster.components.base import RunContext
from cluster.components.tools.url_fetch import URLFetch
from cluster.errors import ComponentError
from tests.component_helpers import build, problems_of, run
from tests.egress_support import loopback_runtime
from tests.tool_servers import Served, serve

PAGE = """<html><head><title>T</title><style>p {color: red}</style><script>track()</script></head>
<body><h1>Refunds</h1><p>Refunds take <b>5 days</b>. <a href="/policy">Read the policy</a>
<img src="x.png" alt="logo"></p><ul><li>card</li><li>bank</li></ul></body></html>"""


def routes(served: Served) -> list[Route]:
    async def endpoint(request: Request) -> Response:
        await served.record(request)
        name = request.path_params["name"]
        port = served.port
        answers: dict[str, Any] = {
            "page": lambda: Response(PAGE, media_type="text/html; charset=utf-8"),
            "data": lambda: JSONResponse({"ok": True, "items": [1, 2]}),
            "plain": lambda: PlainTextResponse("just text"),
            "big": lambda: PlainTextResponse("x" * 50_000),
            "image": lambda: Response(b"\x89PNG....", media_type="image/png"),
            "missing": lambda: PlainTextResponse("SECRET-UPSTREAM-BODY", status_code=404),
            "hop": lambda: RedirectResponse("/plain", status_code=302),
            "away": lambda: RedirectResponse(f"http://localhost:{port}/plain", status_code=301),
            "loop": lambda: RedirectResponse("/loop", status_code=307),
        }
        if name == "hang":
            await served.release.wait()
        return answers[name]() if name in answers else Response(status_code=500)

    return [Route("/{name}", endpoint)]


@pytest.fixture
async def site() -> AsyncIterator[Served]:
    async with serve(routes) as served:
        yield served


def fetcher(**params: Any) -> URLFetch:
    # The egress policy lets both names reach loopback: only the node's own list refuses anything.
    runtime = loopback_runtime({}, allow="127.0.0.1, localhost")
    component: URLFetch = build(URLFetch, {"allowed_domains": ["127.0.0.1"], **params}, runtime)
    return component


async def fetch(site: Served, path: str, **params: Any) -> str:
    component = fetcher(**params)
    try:
        return str((await run(component, {"url": site.url + path}))["text"])
    finally:
        await component.aclose()


async def test_html_becomes_readable_text(site: Served) -> None:
    text = await fetch(site, "/page")
    assert text == "# Refunds\n\nRefunds take **5 days**. Read the policy\n\n  * card\n  * bank"
    assert site.requests[0][2]["accept-encoding"] == "identity"


async def test_json_and_plain_text_pass_as_they_are(site: Served) -> None:
    assert await fetch(site, "/data") == '{"ok":true,"items":[1,2]}'
    assert await fetch(site, "/plain") == "just text"


async def test_size_and_length_limits(site: Served) -> None:
    assert await fetch(site, "/big", max_bytes=1000) == "x" * 1000 + "\n[truncated]"
    assert await fetch(site, "/big", max_chars=10) == "x" * 10 + "\n[truncated]"


async def test_other_content_types_are_refused(site: Served) -> None:
    with pytest.raises(ComponentError, match="^unsupported content type image/png$"):
        await fetch(site, "/image")


async def test_error_status_never_shows_the_upstream_body(site: Served) -> None:
    with pytest.raises(ComponentError) as caught:
        await fetch(site, "/missing")
    assert str(caught.value) == "upstream returned 404"


async def test_host_outside_allowed_domains_is_refused_without_a_request(site: Served) -> None:
    component = fetcher()
    with pytest.raises(
        ComponentError, match="^refused: localhost is not one of this tool's allowed domains$"
    ):
        await run(component, {"url": f"http://localhost:{site.port}/plain"})
    assert site.requests == []
    await component.aclose()


async def test_redirects_are_followed_within_the_allowed_domains(site: Served) -> None:
    assert await fetch(site, "/hop") == "just text"
    assert site.paths == ["/hop", "/plain"]


async def test_a_redirect_outside_the_allowed_domains_is_refused(site: Served) -> None:
    with pytest.raises(ComponentError, match="^refused: a redirect to localhost is not one of"):
        await fetch(site, "/away")
    assert site.paths == ["/away"]  # the page it pointed at was never requested


async def test_redirect_loops_stop(site: Served) -> None:
    with pytest.raises(ComponentError, match="^more than 5 redirects$"):
        await fetch(site, "/loop")
    assert len(site.requests) == 6


async def test_the_run_deadline_bounds_the_fetch(site: Served) -> None:
    component = fetcher(timeout_s=30)
    started = time.monotonic()
    with pytest.raises(ComponentError, match=r"^timed out after 0\.[0-3]\d*s"):
        await component.run({"url": site.url + "/hang"}, RunContext(inputs={}, deadline=started + 0.3))
    assert time.monotonic() - started < 2
    await component.aclose()


async def test_offline_fetches_nothing(site: Served) -> None:
    component = build(URLFetch, {"allowed_domains": ["127.0.0.1"]})
    assert await run(component, {"url": site.url + "/plain"}) == {
        "text": f"[offline] would fetch {site.url}/plain"
    }
    assert site.requests == [] and not component.holds_resources
    with pytest.raises(ComponentError, match="refused: example.org"):  # the same refusals as online
        await run(component, {"url": "https://example.org/"})


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/", "not a url", ""])
async def test_bad_urls(url: str) -> None:
    with pytest.raises(ComponentError):
        await run(build(URLFetch, {"allowed_domains": ["127.0.0.1"]}), {"url": url})


def test_wildcards_match_subdomains_only() -> None:
    component = build(URLFetch, {"allowed_domains": ["*.Example.com", "docs.python.org."]})
    assert str(component.checked_url("https://a.b.example.com/x").host) == "a.b.example.com"
    assert component.checked_url("https://DOCS.python.org/3/")
    for url in ("https://example.com/", "https://badexample.com/", "https://example.com.evil.net/"):
        with pytest.raises(ComponentError, match="refused"):
            component.checked_url(url)


@pytest.mark.parametrize(
    ("params", "path", "code"),
    [
        ({}, "/nodes/0/params", "invalid_params"),
        ({"allowed_domains": []}, "/nodes/0/params/allowed_domains", "invalid_params"),
        (
            {"allowed_domains": ["ok.com", "https://x.com/"]},
            "/nodes/0/params/allowed_domains/1",
            "invalid_domain",
        ),
        ({"allowed_domains": ["x.com:8080"]}, "/nodes/0/params/allowed_domains/0", "invalid_domain"),
        ({"allowed_domains": ["**"]}, "/nodes/0/params/allowed_domains/0", "invalid_domain"),
        ({"allowed_domains": ["x.com", "*"]}, "/nodes/0/params/allowed_domains/1", "invalid_domain"),
        (
            {"allowed_domains": ["x.com"], "max_bytes": 5_000_001},
            "/nodes/0/params/max_bytes",
            "invalid_params",
        ),
    ],
)
def test_param_problems(params: dict[str, Any], path: str, code: str) -> None:
    assert [(p.path, p.code) for p in problems_of(URLFetch, params)] == [(path, code)]


def test_allowed_domains_are_checked_against_the_egress_policy() -> None:
    from cluster.egress.policy import OutboundPolicy

    problems = problems_of(URLFetch, {"allowed_domains": ["example.com", "10.0.0.1"]}, OutboundPolicy())
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/allowed_domains/1", "egress_denied")]


def test_tool_mode() -> None:
    schema = URLFetch.tool_parameters({"allowed_domains": ["a.com", "*.b.org"]})
    assert schema["required"] == ["url"] and schema["additionalProperties"] is False
    assert "a.com, *.b.org" in schema["properties"]["url"]["description"]


def test_star_alone_allows_any_host_and_declares_no_outbound_address() -> None:
    from cluster.egress.policy import OutboundPolicy

    params = {"allowed_domains": ["*"]}
    assert problems_of(URLFetch, params, OutboundPolicy()) == []
    assert URLFetch.outbound(params) == ()
    component = build(URLFetch, params)
    for url in ("https://example.org/x", "http://docs.python.org/3/", "https://a.b.c.example.net/"):
        assert component.checked_url(url)
    with pytest.raises(ComponentError, match="credentials"):  # the other URL checks still apply
        component.checked_url("https://user:pw@example.org/")
    assert "any host" in URLFetch.tool_parameters(params)["properties"]["url"]["description"]


async def test_star_still_goes_through_the_egress_policy(site: Served) -> None:
    # Any host as far as the node is concerned, but the operator's policy denies loopback here.
    runtime = loopback_runtime({}, allow="")
    component = build(URLFetch, {"allowed_domains": ["*"]}, runtime)
    try:
        with pytest.raises(ComponentError):
            await run(component, {"url": site.url + "/plain"})
        assert site.requests == []
    finally:
        await component.aclose()
    assert await fetch(site, "/plain", allowed_domains=["*"]) == "just text"
