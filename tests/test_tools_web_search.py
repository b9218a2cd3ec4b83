"""WebSearch against local fake SearXNG and Tavily servers, allowed only as the operator's search endpoint;
and the replica refusing a version with WebSearch when no provider is configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cluster.components.tools.web_search import WebSearch
from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.egress.search import SearchConfig
from cluster.errors import ComponentError, MissingSearchProvider
from cluster.flow.hashing import sha256_hex
from cluster.settings import Settings, SettingsError
from tests.component_helpers import build, problems_of, run
from tests.egress_support import loopback_runtime
from tests.tool_servers import Served, serve
from worker.loader import Loader, LoadFailure
from worker.metrics import WorkerMetrics
from worker.state import WorkerState
from worker.versions import VersionRef

KEY = "tvly-test-key-1234"
RESULTS = [
    {"title": "Refund policy", "url": "https://shop.example/refunds", "content": "Refunds take\n 5 days."},
    {"title": "", "url": "https://shop.example/faq", "content": ""},
    {"title": "no url"},
    {"title": "Third", "url": "https://shop.example/3", "content": "c" * 600},
]


def routes(served: Served) -> list[Route]:
    async def search(request: Request) -> Response:
        await served.record(request)
        query = request.query_params.get("q") or orjson.loads(await request.body()).get("query")
        if query == "fail":
            return Response(f"internal error, request had {KEY}", status_code=502)
        if query == "garbage":
            return Response(b"<html>", media_type="text/html")
        return JSONResponse({"query": query, "results": RESULTS if query != "nothing" else []})

    return [Route("/search", search, methods=["GET", "POST"])]


@pytest.fixture
async def provider() -> AsyncIterator[Served]:
    async with serve(routes) as served:
        yield served


def runtime_for(provider: Served, name: str, environ: dict[str, str] | None = None) -> Runtime:
    # Egress allows nothing: the search endpoint is reachable only because it is the operator's.
    policy = OutboundPolicy.build(
        egress_allow="none", search_provider=name, search_url=provider.url + "/search"
    )
    return Runtime.from_environ(policy, environ or {})


async def search(runtime: Runtime, query: str, **params: Any) -> str:
    component = build(WebSearch, params, runtime)
    try:
        return str((await run(component, {"query": query}))["text"])
    finally:
        await component.aclose()


async def test_searxng(provider: Served) -> None:
    text = await search(runtime_for(provider, "searxng"), "refund policy")
    assert text.split("\n\n")[:2] == [
        "Refund policy — https://shop.example/refunds\nRefunds take 5 days.",
        "https://shop.example/faq — https://shop.example/faq",
    ]
    assert text.endswith("c" * 499 + "…")
    path, query, _, _ = provider.requests[0]
    assert path == "/search" and query == "q=refund+policy&format=json"


async def test_max_results(provider: Served) -> None:
    text = await search(runtime_for(provider, "searxng"), "refund", max_results=1)
    assert text == "Refund policy — https://shop.example/refunds\nRefunds take 5 days."
    assert await search(runtime_for(provider, "searxng"), "nothing") == "no results"


async def test_tavily(provider: Served) -> None:
    runtime = runtime_for(provider, "tavily", {"TAVILY_API_KEY": KEY})
    text = await search(runtime, "refund policy", max_results=2)
    assert text.count(" — ") == 2
    _, _, headers, body = provider.requests[0]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert orjson.loads(body) == {"query": "refund policy", "max_results": 2}
    assert runtime.redact(f"log line with {KEY}") == "log line with [redacted]"


@pytest.mark.parametrize("name", ["searxng", "tavily"])
async def test_provider_errors_never_show_the_body(provider: Served, name: str) -> None:
    runtime = runtime_for(provider, name, {"TAVILY_API_KEY": KEY})
    with pytest.raises(ComponentError) as caught:
        await search(runtime, "fail")
    assert str(caught.value) == "search provider returned 502"
    with pytest.raises(ComponentError, match="^malformed search response: not JSON$"):
        await search(runtime, "garbage")


async def test_offline_sends_nothing(provider: Served) -> None:
    component = build(WebSearch, {})
    assert await run(component, {"query": "refunds"}) == {"text": "[offline] would search for refunds"}
    assert provider.requests == [] and not component.holds_resources
    with pytest.raises(ComponentError, match="query is empty"):
        await run(component, {"query": ""})


def test_a_runtime_without_a_provider_refuses_to_build() -> None:
    with pytest.raises(MissingSearchProvider, match="FLOWFLEET_SEARCH_PROVIDER"):
        build(WebSearch, {}, loopback_runtime({}))
    tavily = OutboundPolicy.build(search_provider="tavily")
    with pytest.raises(MissingSearchProvider, match="TAVILY_API_KEY") as caught:
        build(WebSearch, {}, Runtime.from_environ(tavily, {}))
    assert caught.value.code == "missing_search_provider"


class OneBlob:
    """A store holding one blob (the loader reads nothing else before compiling)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def get_blob(self, flow: str, digest: str) -> bytes:
        return self.data


async def test_the_loader_reports_a_missing_provider_as_its_own_reason() -> None:
    def compiler(data: bytes) -> Any:
        raise MissingSearchProvider("no web search provider on this replica")

    data = b'{"nodes": []}'
    loader = Loader(OneBlob(data), WorkerState("r1"), compiler, WorkerMetrics())  # type: ignore[arg-type]
    with pytest.raises(LoadFailure) as caught:
        await loader.prepare(VersionRef("qa", sha256_hex(data), 1))
    assert caught.value.reason == "missing_search_provider"


def test_settings_and_policy() -> None:
    settings = Settings.from_env(
        {"FLOWFLEET_SEARCH_PROVIDER": "searxng", "FLOWFLEET_SEARCH_URL": "http://10.1.2.3:8080/search"}
    )
    policy = OutboundPolicy.from_settings(settings)
    assert (policy.search_provider, policy.search_url) == ("searxng", "http://10.1.2.3:8080/search")
    assert policy.egress.check_url("http://10.1.2.3:8080/other") is None  # allowed like OPENAI_BASE_URL
    assert policy.egress.check_url("http://10.1.2.3:9090/") is not None
    assert OutboundPolicy.build(search_provider="tavily").search_url == "https://api.tavily.com/search"
    runtime = Runtime.from_environ(OutboundPolicy.build(search_provider="tavily"), {"TAVILY_API_KEY": KEY})
    assert runtime.search == SearchConfig("tavily", "https://api.tavily.com/search", KEY)
    assert KEY not in repr(runtime.search) and KEY in runtime.sensitive_values
    assert Runtime.from_environ(OutboundPolicy(), {"TAVILY_API_KEY": KEY}).search is None


@pytest.mark.parametrize(
    ("provider", "url", "message"),
    [
        ("bing", None, "expected one of searxng, tavily"),
        ("searxng", None, "needs FLOWFLEET_SEARCH_URL"),
        (None, "http://searxng:8080/search", "FLOWFLEET_SEARCH_PROVIDER is not"),
        ("searxng", "http://user:pw@searxng:8080/search", "credentials"),
    ],
)
def test_bad_search_settings(provider: str | None, url: str | None, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        OutboundPolicy.build(search_provider=provider, search_url=url)


def test_params_and_tool_mode() -> None:
    assert problems_of(WebSearch, {"max_results": 10, "tool_name": "web"}) == []
    for bad in ({"max_results": 0}, {"max_results": 11}, {"provider": "tavily"}, {"api_key": "k"}):
        assert problems_of(WebSearch, bad), bad
    schema = WebSearch.tool_parameters({})
    assert schema["required"] == ["query"] and schema["additionalProperties"] is False


async def test_the_real_compiler_refuses_a_search_flow_on_a_replica_without_a_provider() -> None:
    from cluster.egress.policy import OutboundPolicy
    from cluster.egress.runtime import Runtime
    from cluster.flow.hashing import content_address
    from worker.replica import engine_compiler

    doc = {"nodes": [{"id": "search", "type": "WebSearch", "params": {}}]}
    data, digest = content_address(doc)
    compiler = engine_compiler(Runtime(OutboundPolicy()))
    loader = Loader(OneBlob(data), WorkerState("r1"), compiler, WorkerMetrics())  # type: ignore[arg-type]
    with pytest.raises(LoadFailure) as caught:
        await loader.prepare(VersionRef("qa", digest, 1))
    assert caught.value.reason == "missing_search_provider"
    assert "FLOWFLEET_SEARCH_PROVIDER" in caught.value.message
