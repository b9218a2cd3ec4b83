"""The component contract: a params schema, declared ports, and an async run method.

A component class is pure data plus behaviour; flowfleet never executes code that comes from a flow
document. Built-in components live in this package; third-party packages add more through the
entry-point group ``flowfleet.components`` (see ``registry.py``).

    class Upper(Component):
        type_name = "Upper"
        description = "Upper-cases its input."
        params_schema = {"type": "object", "additionalProperties": False, "properties": {}}

        @classmethod
        def ports(cls, params):
            return Ports(inputs=("text",), required=frozenset({"text"}), default_input="text",
                         outputs=("text",), default_output="text")

        async def run(self, inputs, ctx):
            return {"text": str(inputs["text"]).upper()}
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cluster.egress.policy import Outbound
from cluster.errors import Problem

if TYPE_CHECKING:
    from cluster.components.conversation import Conversation
    from cluster.egress.runtime import Runtime


@dataclass(frozen=True)
class Ports:
    """The named inputs and outputs of one node, as derived from its params.

    `required` inputs must be fed by an edge or, failing that, by the run's inputs under the same name.
    An edge without `target_input` feeds `default_input`; one without `source_output` reads
    `default_output`.
    """

    inputs: tuple[str, ...] = ()
    required: frozenset[str] = frozenset()
    default_input: str | None = None
    outputs: tuple[str, ...] = ("output",)
    default_output: str = "output"
    # The input whose edges attach tools (tool mode) instead of feeding a value: an edge from node T
    # into this port makes T one of this node's tools; T then runs only when this node calls it.
    tools: str | None = None
    # Inputs only an edge may feed: left unfed, they are not read from the run's inputs (a caller must
    # not be able to replace, say, an agent's instructions).
    edge_only: frozenset[str] = frozenset()


# A tool's name as chat-completions APIs accept it.
TOOL_NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
# The params every tool-mode component takes: how the model sees it.
TOOL_PARAMS: dict[str, Any] = {
    "tool_name": {"type": "string", "pattern": TOOL_NAME_PATTERN},
    "tool_description": {"type": "string", "minLength": 1, "maxLength": 2000},
}


@dataclass(frozen=True)
class ToolSpec:
    """How a model sees a tool: its name, what it does and a JSON schema (an object) of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def as_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class BuildContext:
    """What a component may use while it is built (once per compile, never per run).

    `runtime` holds the secrets the operator lists and the egress-checked HTTP client; it is None for
    dry runs (publish, sync, validate, examples), where a component that would call out stays offline.
    A component never reads the process environment itself.
    """

    flow_name: str
    runtime: Runtime | None = None


@dataclass
class RunContext:
    """Per-run state handed to every node: the run's inputs and its deadline (time.monotonic())."""

    inputs: Mapping[str, Any]
    deadline: float | None = None
    run_id: str = ""
    # Offline runs of an example: node id -> the reply its `replies` records for that node.
    replies: Mapping[str, str] | None = None
    # The run's trace when one is kept: components with inner steps (an agent's model rounds and tool
    # calls) append their own entries, each naming its node.
    trace: list[dict[str, Any]] | None = None
    # The conversation the run continues, when the caller names one (session_id); see
    # cluster/components/conversation.py. None: no memory (every turn starts empty).
    conversation: Conversation | None = None
    # The events sink of a streamed run, None otherwise: LLM and Agent nodes then ask their provider for
    # a streamed reply and emit `{"event": "token", "node": id, "delta": text}`, `tool_call` and
    # `tool_result` events into it (synchronously; the sink must not block).
    stream: Callable[[dict[str, Any]], None] | None = None

    def remaining(self) -> float | None:
        """Seconds left before the run's deadline, or None when the run has no deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


class Component(ABC):
    """One node type. Instances are built once per compiled flow and shared by concurrent runs,
    so `run` must not mutate instance state."""

    type_name: ClassVar[str]
    description: ClassVar[str] = ""
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    # Output nodes name the run's outputs; when a flow has none, its sink nodes count as outputs.
    is_output: ClassVar[bool] = False
    # Input nodes read a value from the run's inputs.
    is_input: ClassVar[bool] = False
    # Tool mode: the node can be wired to an agent's `tools` input; `tool_parameters` then says what
    # the model passes, and a call runs the node with those arguments as its inputs.
    tool_mode: ClassVar[bool] = False
    # Whether the node reads or adds to the run's conversation (RunContext.conversation): the replica
    # opens one for a run that names a session only when some node of the flow does.
    uses_conversation: ClassVar[bool] = False

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        self.node_id = node_id
        self.params = params

    @classmethod
    @abstractmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        """The node's ports for these (already schema-valid) params."""

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        """Semantic checks beyond the JSON schema (e.g. template safety); `path` points at the params."""
        return []

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        """What these (valid) params make the node use outside the flow: secrets by name, URLs. Checked
        against the operator's policy at validation; a replica refuses a version whose secrets it lacks."""
        return ()

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """For tool-mode components: the JSON schema (an object) of the arguments a model passes; each
        property is one of the node's inputs."""
        raise NotImplementedError(f"{cls.type_name} has no tool mode")

    def tool_spec(self) -> ToolSpec:
        """How a model sees this node as a tool: `tool_name` / `tool_description` params, else the node
        id and the component's description."""
        return ToolSpec(
            name=self.params.get("tool_name") or self.node_id,
            description=self.params.get("tool_description") or self.description,
            parameters=type(self).tool_parameters(self.params),
        )

    def bind_tools(self, tools: list[Component]) -> None:
        """Give a component that declares a `tools` port the nodes wired to it (once, at compile)."""
        raise TypeError(f"{self.type_name} takes no tools")

    def output_name(self) -> str:
        """For output nodes: the key of the run's outputs this node writes (defaults to the node id)."""
        name = self.params.get("name")
        return name if isinstance(name, str) and name else self.node_id

    @abstractmethod
    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        """Compute the node's outputs, keyed by output port.

        Returning only some ports is how a Router chooses a branch: nodes fed solely by ports that were
        not returned are skipped. Raise ComponentError for expected failures.
        """

    @property
    def holds_resources(self) -> bool:
        """Whether `aclose` releases anything; a component overriding `aclose` is assumed to."""
        return type(self).aclose is not Component.aclose

    async def aclose(self) -> None:
        """Release what the component acquired when it was built (e.g. an HTTP client's connections).

        Called once, when the compiled flow holding this instance is retired and no run uses it any more.
        """
        return None
