"""The one error a LangFlow import raises: every unsupported component and every other problem at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.errors import FlowfleetError


@dataclass(frozen=True)
class UnsupportedNode:
    """A LangFlow component that has no flowfleet equivalent, with the reason."""

    id: str
    type: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "type": self.type, "reason": self.reason}


class LangflowImportError(FlowfleetError):
    """A LangFlow export that cannot be converted.

    `unsupported` lists every component that cannot be mapped (not only the first), `problems` every
    other defect (unreadable nodes, edges into fields flowfleet cannot feed). Both are in `details`.
    """

    code = "unsupported_langflow"
    http_status = 422
    exit_code = 1

    def __init__(self, unsupported: Sequence[UnsupportedNode] = (), problems: Sequence[str] = ()) -> None:
        self.unsupported = tuple(unsupported)
        self.problems = tuple(problems)
        parts: list[str] = []
        if self.unsupported:
            listed = "; ".join(f"{u.id} ({u.type}): {u.reason}" for u in self.unsupported)
            noun = "component" if len(self.unsupported) == 1 else "components"
            parts.append(f"{len(self.unsupported)} unsupported LangFlow {noun}: {listed}")
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            parts.append(self.problems[0] + more)
        super().__init__(
            "cannot import LangFlow export: " + ("; ".join(parts) or "nothing to import"),
            unsupported=[u.as_dict() for u in self.unsupported],
            problems=list(self.problems),
        )
