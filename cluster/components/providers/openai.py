"""The `openai` provider: any OpenAI-compatible chat-completions endpoint, over httpx.

The API key is never part of a flow: the flow names a secret the operator lists (`api_key_env`), and the
replica hands its value in when the flow is compiled. Requests go through the egress-checked client the
runtime builds (cluster.egress). 429 and 5xx replies, timeouts and connection failures are retried with
exponential backoff (honouring Retry-After), but never past the run's deadline; any other status or a
reply without text fails the node with a ComponentError.

What a caller sees of a failure is a status and a short reason (`upstream returned 401`), never the
upstream's body: that goes to this replica's log, with secret values redacted.

Streamed (`chat(..., on_delta=...)`, only for runs that asked for a stream) the request says
`"stream": true` and `stream_options.include_usage`; the reply is read as OpenAI's server-sent events:
each chunk's `choices[0].delta.content` goes to `on_delta` as it arrives, `delta.tool_calls` fragments
are assembled by their `index`, and the last chunk's `usage` is kept. A failure before the first piece
of text is retried like any other; once text went out, a broken stream fails the node (a retry would
repeat what the client already has). Each piece is redacted on its own: a secret split across two
pieces is caught only in the final text.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson

from cluster.components.providers import OnDelta, Remaining
from cluster.components.providers.chat import ChatReply, Message, event_lines, parse_reply, read_stream
from cluster.components.providers.usage import count_tokens
from cluster.errors import ComponentError

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 30.0
DETAIL_CHARS = 300
# After `data: [DONE]`: how long, and how many lines, the end of a streamed body is waited for.
DRAIN_S = 0.5
DRAIN_LINES = 16


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 60.0
    retries: int = 2
    backoff_s: float = 0.5

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a Retry-After header (delta seconds or an HTTP date); None if absent or unreadable.

    >>> retry_after_seconds("2"), retry_after_seconds("soon")
    (2.0, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _detail(response: httpx.Response) -> str:
    """The server's own error message if it sent an OpenAI-style error body, else the start of the body."""
    try:
        body = orjson.loads(response.content)
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
        if isinstance(message, str) and message:
            return message[:DETAIL_CHARS]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        pass
    text = response.text.strip()
    return text[:DETAIL_CHARS] if text else "(empty body)"


class OpenAIProvider:
    """One pooled, egress-checked HTTP client per LLM node, created when the flow is compiled and reused
    by every run."""

    def __init__(
        self,
        config: OpenAIConfig,
        api_key: str | None,
        client: httpx.AsyncClient,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.config = config
        self._client = client
        self._redact = redact
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # A streamed request is built once here, but for its body and timeout: the headers the client would
        # add (its defaults, then ours) and the URL, so that no call merges or parses them again.
        self._stream_url = httpx.URL(config.url)
        self._stream_headers = client.headers.copy()
        self._stream_headers.update({**self._headers, "Accept": "text/event-stream"})

    def _body(self, messages: list[Message], extra: Mapping[str, Any]) -> bytes:
        body: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if self.config.temperature is not None:
            body["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        body.update(extra)
        return orjson.dumps(body)

    def _stream_body(self, messages: list[Message], extra: Mapping[str, Any]) -> bytes:
        return self._body(messages, {**extra, "stream": True, "stream_options": {"include_usage": True}})

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_BACKOFF_S)
        # Jitter spreads the retries of many concurrent runs hitting the same rate limit.
        delay: float = self.config.backoff_s * 2.0**attempt * (1 + random.random() / 4)
        return min(delay, MAX_BACKOFF_S)

    def _log_failure(self, status: int, response: httpx.Response) -> None:
        logger.warning(
            "upstream %s model=%s answered HTTP %d: %s",
            self.config.url,
            self.config.model,
            status,
            self._redact(_detail(response)),
        )

    async def _attempt(self, body: bytes, timeout: float) -> tuple[ChatReply | None, str, float | None]:
        """One request: (reply, "", None), or (None, why, Retry-After) for a failure worth retrying."""
        try:
            response = await self._client.post(
                self.config.url, content=body, headers=self._headers, timeout=timeout
            )
        except httpx.TimeoutException:
            return None, f"upstream timed out after {timeout:g}s", None
        except httpx.TransportError as e:
            logger.warning("upstream %s: connection failed: %s", self.config.url, self._redact(repr(e)))
            return None, f"upstream connection failed ({type(e).__name__})", None
        status = response.status_code
        if 200 <= status < 300:
            reply = parse_reply(response.content)
            if reply.content is not None:
                reply = replace(reply, content=self._redact(reply.content))
            return reply, "", None
        self._log_failure(status, response)
        why = f"upstream returned {status}"
        if status not in RETRYABLE_STATUS:
            raise ComponentError(why, status=status)
        return None, why, retry_after_seconds(response.headers.get("retry-after"))

    async def _attempt_stream(
        self, body: bytes, timeout: float, on_delta: OnDelta
    ) -> tuple[ChatReply | None, str, float | None]:
        """`_attempt`, streamed: pieces of text go to `on_delta` as they arrive."""
        sent = _Sent(on_delta, self._redact)
        request = httpx.Request(
            "POST",
            self._stream_url,
            content=body,
            headers=self._stream_headers,
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        try:
            async with contextlib.aclosing(await self._client.send(request, stream=True)) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    await response.aread()
                    self._log_failure(status, response)
                    why = f"upstream returned {status}"
                    if status not in RETRYABLE_STATUS:
                        raise ComponentError(why, status=status)
                    return None, why, retry_after_seconds(response.headers.get("retry-after"))
                lines = event_lines(response.aiter_bytes())
                reply = await read_stream(lines, sent)
                await _read_to_the_end(lines)
        except httpx.TimeoutException:
            why = f"upstream timed out after {timeout:g}s"
        except httpx.TransportError as e:
            logger.warning("upstream %s: stream failed: %s", self.config.url, self._redact(repr(e)))
            why = f"upstream connection failed ({type(e).__name__})"
        else:
            if reply.content is not None:
                reply = replace(reply, content=self._redact(reply.content))
            return reply, "", None
        if sent.any:
            raise ComponentError(f"the upstream stream broke after part of the answer: {why}")
        return None, why, None

    async def complete(self, prompt: str, system: str | None, remaining: Remaining) -> str:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        reply = await self.chat(messages, remaining)
        if reply.content is None:
            raise ComponentError("malformed response: the model answered with tool calls, not text")
        return reply.content

    async def chat(
        self,
        messages: list[Message],
        remaining: Remaining,
        extra: Mapping[str, Any] | None = None,
        *,
        on_delta: OnDelta | None = None,
    ) -> ChatReply:
        """One chat-completions round (`extra`: tools, tool_choice, response_format ...), retried as the
        module says; the reply's text has secret values redacted. With `on_delta`, streamed."""
        if on_delta is None:
            body = self._body(messages, extra or {})
        else:
            body = self._stream_body(messages, extra or {})
        attempts = self.config.retries + 1
        why = ""
        for attempt in range(attempts):
            budget = remaining()
            if budget is not None and budget <= 0:
                last = f"; last error: {why}" if why else ""
                raise ComponentError(f"run deadline reached after {attempt} attempt(s){last}")
            timeout = self.config.timeout_s if budget is None else min(self.config.timeout_s, budget)
            if on_delta is None:
                reply, why, retry_after = await self._attempt(body, timeout)
            else:
                reply, why, retry_after = await self._attempt_stream(body, timeout, on_delta)
            if reply is not None:
                count_tokens(reply.usage)
                return reply
            if attempt + 1 == attempts:
                break
            delay = self._backoff(attempt, retry_after)
            budget = remaining()
            if budget is not None and delay >= budget:
                raise ComponentError(
                    f"giving up after {attempt + 1} attempt(s): the next retry in {delay:.2f}s would pass "
                    f"the run deadline; last error: {why}"
                )
            logger.info("retrying %s in %.2fs after: %s", self.config.url, delay, why)
            await asyncio.sleep(delay)
        raise ComponentError(f"failed after {attempts} attempt(s); last error: {why}")

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_to_the_end(lines: AsyncIterator[bytes]) -> None:
    """Read what follows `[DONE]`, normally nothing but the end of the body, so that the connection goes
    back to the pool: a response closed before its end closes its connection, and the next run of the node
    would pay for a new TCP (and TLS) handshake before its first token. An upstream that goes on talking
    (more than DRAIN_LINES lines, or for DRAIN_S) keeps the old behaviour: its connection is closed."""
    try:
        async with asyncio.timeout(DRAIN_S):
            for _ in range(DRAIN_LINES):
                await anext(lines)
    except (StopAsyncIteration, TimeoutError, httpx.HTTPError):
        pass  # the reply is complete whatever the rest of the body does


class _Sent:
    """Hands redacted pieces of text on, remembering whether any went out."""

    def __init__(self, on_delta: OnDelta, redact: Callable[[str], str]) -> None:
        self.on_delta, self.redact, self.any = on_delta, redact, False

    def __call__(self, text: str) -> None:
        self.any = True
        self.on_delta(self.redact(text))
