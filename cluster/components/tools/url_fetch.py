"""URLFetch: GETs a page from the domains a node allows and returns it as text; input `url`, output `text`.

    {"id": "docs", "type": "URLFetch", "params": {"allowed_domains": ["docs.python.org", "*.example.com"]}}

Every request goes through the runtime's egress-checked client, and every hop — redirects are followed by
hand, at most 5 — must also be in `allowed_domains`: a fetched page cannot steer an agent into sending
data to a host the flow author did not name. The single entry `"*"` lifts that list (any host the
operator's egress policy allows): the widest setting, for flows whose model picks the URLs. HTML becomes
readable text (html2text, without links and images); text/plain, text/markdown and application/json pass
as they are; other types are refused. The body is read up to `max_bytes`, the text cut at `max_chars`.
An upstream error status reaches the caller as `upstream returned 404`, never with its body. Without a
runtime (dry runs) nothing is fetched.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

import html2text
import httpx

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.tools.common import arguments_schema, text_argument, time_budget, tool_params_schema
from cluster.egress.policy import Outbound
from cluster.errors import ComponentError, Problem

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_URL_CHARS = 2_000
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "application/json"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# HTML bigger than this is converted in a thread, so other runs keep going meanwhile.
THREAD_HTML_CHARS = 100_000
TRUNCATED = "\n[truncated]"
HEADERS = {
    "User-Agent": "flowfleet-urlfetch",
    "Accept": "text/html, text/markdown, text/plain, application/json;q=0.9",
    # Compressed bodies could inflate far beyond max_bytes inside a single chunk.
    "Accept-Encoding": "identity",
}
# `allowed_domains: ["*"]`: any host; only the egress policy (checked on every connection) limits it.
ANY_HOST = "*"
# A host name (letters, digits, -, _; ASCII/punycode) or IPv4 address, optionally as *.domain.
_DOMAIN = re.compile(
    r"(?:\*\.)?(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)


def domain_allowed(host: str, domains: tuple[str, ...]) -> bool:
    """Whether `host` is one of `domains`; `*.example.com` matches names below example.com, not itself,
    and `*` matches every host.

    >>> [domain_allowed(host, ("*.example.com",)) for host in ("docs.example.com", "example.com")]
    [True, False]
    >>> domain_allowed("anything.net", ("*",))
    True
    """
    host = host.lower().removesuffix(".")
    for domain in domains:
        if domain == ANY_HOST or host == domain or (domain.startswith("*.") and host.endswith(domain[1:])):
            return True
    return False


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.ignore_links = True
    converter.ignore_images = True
    converter.body_width = 0  # no hard wrapping: the reader is a model
    converter.unicode_snob = True
    return converter.handle(html)


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset name Python does not know
        return body.decode("utf-8", errors="replace")


class URLFetch(Component):
    type_name = "URLFetch"
    description = (
        "Fetches a web page or document by URL (GET) and returns its text. Only some domains can be "
        "fetched; HTML is converted to plain text."
    )
    params_schema = tool_params_schema(
        {
            "allowed_domains": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {"type": "string", "minLength": 1, "maxLength": 253},
                "description": "host names that may be fetched, redirects included; *.example.com for "
                'any name below example.com; ["*"] alone for any host the egress policy allows '
                "(the widest setting, discouraged)",
            },
            "max_bytes": {"type": "integer", "minimum": 1, "maximum": 5_000_000, "default": 1_000_000},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 120, "default": 10},
            "max_chars": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 20_000},
        },
        required=("allowed_domains",),
    )
    tool_mode = True

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.domains = tuple(d.lower().removesuffix(".") for d in params["allowed_domains"])
        self.max_bytes = int(params.get("max_bytes", 1_000_000))
        self.timeout_s = float(params.get("timeout_s", 10.0))
        self.max_chars = int(params.get("max_chars", 20_000))
        runtime = build.runtime
        self.client = None if runtime is None else runtime.http_client(timeout=self.timeout_s)

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=("url",),
            required=frozenset({"url"}),
            default_input="url",
            outputs=("text",),
            default_output="text",
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        domains = params["allowed_domains"]
        problems: list[Problem] = []
        for i, domain in enumerate(domains):
            where = f"{path}/allowed_domains/{i}"
            if domain == ANY_HOST:
                if len(domains) > 1:
                    message = f"{ANY_HOST!r} (any host) must be the only entry of allowed_domains"
                    problems.append(Problem(where, "invalid_domain", message))
            elif not _DOMAIN.fullmatch(domain.lower().removesuffix(".")):
                message = (
                    f"{domain!r} is not a host name (example.com, *.example.com, or * alone; "
                    "no scheme, port or path)"
                )
                problems.append(Problem(where, "invalid_domain", message))
        return problems

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        # Wildcards (`*.example.com`, `*`) name no host to check; the egress policy still decides
        # each connection.
        return tuple(
            Outbound("url", f"allowed_domains/{i}", f"https://{domain.removesuffix('.')}/")
            for i, domain in enumerate(params["allowed_domains"])
            if not domain.startswith("*")
        )

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        listed = tuple(params.get("allowed_domains", ()))
        domains = "any host" if ANY_HOST in listed else ", ".join(listed)
        url = {
            "type": "string",
            "maxLength": MAX_URL_CHARS,
            "description": f"the http(s) URL to fetch; allowed domains: {domains}",
        }
        return arguments_schema({"url": url}, required=("url",))

    def checked_url(self, text: str, redirect: bool = False) -> httpx.URL:
        """`text` as a URL this node may fetch, else ComponentError naming the host."""
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as e:
            raise ComponentError(f"invalid URL: {e}") from e
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ComponentError("invalid URL: expected http(s)://host/…")
        if url.userinfo:
            raise ComponentError("invalid URL: credentials in URLs are not allowed")
        host = url.raw_host.decode("ascii")
        if not domain_allowed(host, self.domains):
            what = "a redirect to " if redirect else ""
            raise ComponentError(f"refused: {what}{host} is not one of this tool's allowed domains")
        return url

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        text = text_argument(inputs, "url", MAX_URL_CHARS)
        url = self.checked_url(text)
        if self.client is None:
            return {"text": f"[offline] would fetch {text}"}
        budget = time_budget(self.timeout_s, ctx)
        try:
            async with asyncio.timeout(budget):
                media, body, charset, cut = await self._fetch(url, budget)
        except TimeoutError as e:
            raise ComponentError(f"timed out after {budget:.3g}s") from e
        except httpx.TimeoutException as e:
            raise ComponentError(f"timed out after {budget:.3g}s") from e
        except httpx.HTTPError as e:
            logger.warning("URLFetch %s: %s failed: %r", self.node_id, url.host, e)
            raise ComponentError(f"fetch failed ({type(e).__name__})") from e
        return {"text": await self._text(media, _decode(body, charset), cut)}

    async def _fetch(self, url: httpx.URL, timeout: float) -> tuple[str, bytes, str | None, bool]:
        """(media type, body, charset, cut short) of the first non-redirect response."""
        assert self.client is not None
        for _ in range(MAX_REDIRECTS + 1):
            async with self.client.stream("GET", url, headers=HEADERS, timeout=timeout) as response:
                status = response.status_code
                if status in REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise ComponentError(f"upstream returned {status} without a Location")
                    try:
                        target = str(response.url.join(location))
                    except httpx.InvalidURL as e:
                        raise ComponentError("upstream redirected to an invalid URL") from e
                    url = self.checked_url(target, redirect=True)
                    continue
                if not 200 <= status < 300:
                    raise ComponentError(f"upstream returned {status}")
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if media not in TEXT_TYPES | HTML_TYPES:
                    raise ComponentError(f"unsupported content type {media or '(none)'}")
                body, cut = await self._read(response)
                return media, body, response.charset_encoding, cut
        raise ComponentError(f"more than {MAX_REDIRECTS} redirects")

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        """The body up to max_bytes; stops reading (and says so) past it."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                return b"".join(chunks)[: self.max_bytes], True
        return b"".join(chunks), False

    async def _text(self, media: str, text: str, cut: bool) -> str:
        if media in HTML_TYPES:
            if len(text) > THREAD_HTML_CHARS:
                text = await asyncio.to_thread(html_to_text, text)
            else:
                text = html_to_text(text)
            text = re.sub(r"\n{3,}", "\n\n", text)
        text = text.strip()
        if cut or len(text) > self.max_chars:
            text = text[: self.max_chars] + TRUNCATED
        return text

    @property
    def holds_resources(self) -> bool:
        return self.client is not None

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
