"""The tokens one run used, as its providers report them, for an API that answers with `usage`.

    with TokenCount() as tokens:        # around one run; tasks the run starts share the counter
        result = await compiled.run(inputs)
    tokens.prompt, tokens.completion    # every model reply of the run, every node, every round

A context variable rather than a field of the run's `RunContext`: providers never see the context (only
its deadline), and a run's node and tool tasks inherit the variable, so every reply of the run lands in
the one counter its caller set, while concurrent runs count apart. Outside such a block (the native API,
dry runs) a reply is counted nowhere; the Prometheus meter (cluster.components.meter) is separate.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token


class TokenCount:
    """Tokens counted so far; as a context manager, the counter of the replies of whatever runs inside
    the block (and of the tasks it starts)."""

    __slots__ = ("prompt", "completion", "_token")
    _token: Token[TokenCount | None]

    def __init__(self, prompt: int = 0, completion: int = 0) -> None:
        self.prompt = prompt
        self.completion = completion

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def add(self, usage: Mapping[str, int]) -> None:
        """One reply's `usage` (`prompt_tokens`, `completion_tokens`; other keys are not counted)."""
        self.prompt += usage.get("prompt_tokens", 0)
        self.completion += usage.get("completion_tokens", 0)

    def __enter__(self) -> TokenCount:
        self._token = COUNTER.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        COUNTER.reset(self._token)


# The counter of the run the current context belongs to. `with TokenCount()` sets it; a hot path may
# set and reset it itself (`token = COUNTER.set(tokens)` ... `COUNTER.reset(token)`), two calls fewer.
COUNTER: ContextVar[TokenCount | None] = ContextVar("flowfleet_run_tokens", default=None)


def count_tokens(usage: Mapping[str, int]) -> None:
    """Add one model reply's usage to the counter of the run it belongs to, if its caller counts."""
    counter = COUNTER.get()
    if counter is not None and usage:
        counter.add(usage)
