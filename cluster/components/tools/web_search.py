"""WebSearch: searches the web through the operator's provider; input `query`, output `text`.

    {"id": "search", "type": "WebSearch", "params": {"max_results": 3}}

    -> "Python 3.13 released — https://www.python.org/downloads/\nPython 3.13 is the newest …\n\n…"

The provider is an operator setting, never part of the flow (FLOWFLEET_SEARCH_PROVIDER: `searxng` at
FLOWFLEET_SEARCH_URL, or `tavily` with TAVILY_API_KEY; the endpoint is allowed by the egress policy
automatically). A replica without one refuses the version in the two-phase prepare
(MissingSearchProvider), as it does for a missing secret. Without a runtime (dry runs) nothing is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.tools.common import arguments_schema, text_argument, time_budget, tool_params_schema
from cluster.egress.policy import Outbound
from cluster.egress.search import TAVILY_KEY_ENV, SearchConfig
from cluster.errors import ComponentError, MissingSearchProvider

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 400
MAX_TITLE_CHARS = 200
MAX_SNIPPET_CHARS = 500
NO_RESULTS = "no results"


def format_results(results: Any, limit: int) -> str:
    """The first `limit` well-formed results as "title — url\\nsnippet" blocks, blank-line separated.

    >>> format_results([{"title": "A", "url": "https://a.example/", "content": "about a"}], 5)
    'A — https://a.example/\\nabout a'
    """
    if not isinstance(results, list):
        raise ComponentError("malformed search response: no results list")
    blocks: list[str] = []
    for item in results:
        if len(blocks) == limit:
            break
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            continue
        title = _field(item, "title", MAX_TITLE_CHARS) or item["url"]
        snippet = _field(item, "content", MAX_SNIPPET_CHARS)
        blocks.append(f"{title} — {item['url']}" + (f"\n{snippet}" if snippet else ""))
    return "\n\n".join(blocks) or NO_RESULTS


def _field(item: Mapping[str, Any], key: str, limit: int) -> str:
    value = item.get(key)
    text = " ".join(value.split()) if isinstance(value, str) else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WebSearch(Component):
    type_name = "WebSearch"
    description = (
        "Searches the web and returns the top results, each as its title, URL and a snippet. "
        "Use it for current events or facts you are unsure of."
    )
    params_schema = tool_params_schema(
        {
            "max_results": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 120, "default": 10},
        }
    )
    tool_mode = True

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.max_results = int(params.get("max_results", 5))
        self.timeout_s = float(params.get("timeout_s", 10.0))
        self.config: SearchConfig | None = None
        self.client: httpx.AsyncClient | None = None
        runtime = build.runtime
        if runtime is None:
            return
        if runtime.search is None:
            raise MissingSearchProvider(
                "no web search provider on this replica (set FLOWFLEET_SEARCH_PROVIDER)"
            )
        if runtime.search.provider == "tavily" and not runtime.search.api_key:
            raise MissingSearchProvider(f"search provider tavily needs {TAVILY_KEY_ENV} on this replica")
        self.config = runtime.search
        self.client = runtime.http_client(timeout=self.timeout_s)

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=("query",),
            required=frozenset({"query"}),
            default_input="query",
            outputs=("text",),
            default_output="text",
        )

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        return (Outbound("service", "provider", "web_search"),)

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        query = {"type": "string", "maxLength": MAX_QUERY_CHARS, "description": "what to search for"}
        return arguments_schema({"query": query}, required=("query",))

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        query = text_argument(inputs, "query", MAX_QUERY_CHARS)
        if self.client is None or self.config is None:
            return {"text": f"[offline] would search for {query}"}
        budget = time_budget(self.timeout_s, ctx)
        try:
            response = await self._request(self.config, query, budget)
        except httpx.TimeoutException as e:
            raise ComponentError(f"search timed out after {budget:.3g}s") from e
        except httpx.HTTPError as e:
            logger.warning("WebSearch %s: %s failed: %r", self.node_id, self.config.provider, e)
            raise ComponentError(f"search failed ({type(e).__name__})") from e
        if not 200 <= response.status_code < 300:
            # The body stays out of what the caller sees (it may quote the request, key included).
            logger.warning(
                "WebSearch %s: %s answered HTTP %d", self.node_id, self.config.provider, response.status_code
            )
            raise ComponentError(f"search provider returned {response.status_code}")
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError as e:
            raise ComponentError("malformed search response: not JSON") from e
        results = data.get("results") if isinstance(data, dict) else None
        return {"text": format_results(results, self.max_results)}

    async def _request(self, config: SearchConfig, query: str, timeout: float) -> httpx.Response:
        assert self.client is not None
        if config.provider == "tavily":
            body = {"query": query, "max_results": self.max_results}
            headers = {"Authorization": f"Bearer {config.api_key}"}
            return await self.client.post(config.url, json=body, headers=headers, timeout=timeout)
        params = {"q": query, "format": "json"}
        return await self.client.get(config.url, params=params, timeout=timeout)

    @property
    def holds_resources(self) -> bool:
        return self.client is not None

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
