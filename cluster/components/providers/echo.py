"""The `echo` provider: deterministic and offline, for demos, tests and dry runs.

>>> import asyncio
>>> asyncio.run(EchoProvider("echo-1").complete("hi", None, lambda: None))
'[echo-1] hi'
>>> asyncio.run(EchoProvider("echo-1").complete("hi", "be brief", lambda: None))
'[echo-1] (system: be brief) hi'
"""

from __future__ import annotations

from cluster.components.providers import Remaining


class EchoProvider:
    """Replies with the model name, then the system message (if any), then the prompt, verbatim."""

    holds_resources = False  # nothing to close

    def __init__(self, model: str) -> None:
        self.model = model

    async def complete(self, prompt: str, system: str | None, remaining: Remaining) -> str:
        if system:
            return f"[{self.model}] (system: {system}) {prompt}"
        return f"[{self.model}] {prompt}"

    async def aclose(self) -> None:
        return None
