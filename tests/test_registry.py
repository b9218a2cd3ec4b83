"""The component registry: built-ins, suggestions, and plugins found through real entry-point metadata."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.components.base import Component
from cluster.components.io import ChatInput, TextInput
from cluster.components.llm import LLM
from cluster.components.registry import Registry, builtin_components, default_registry, load_plugins
from cluster.engine import compile_flow
from cluster.flow.validation import validate

PLUGIN = '''
"""A third-party component package, as a plugin author would write it."""
from cluster.components.base import Component, Ports


class Upper(Component):
    type_name = "Upper"
    description = "Upper-cases its input."
    params_schema = {"type": "object", "additionalProperties": False,
                     "properties": {"suffix": {"type": "string", "default": ""}}}

    @classmethod
    def ports(cls, params):
        return Ports(inputs=("text",), required=frozenset({"text"}), default_input="text",
                     outputs=("text",), default_output="text")

    async def run(self, inputs, ctx):
        return {"text": str(inputs["text"]).upper() + self.params.get("suffix", "")}


class Reverse(Upper):
    type_name = "Reverse"

    async def run(self, inputs, ctx):
        return {"text": str(inputs["text"])[::-1]}


class FakeLLM(Upper):
    type_name = "LLM"


not_a_component = 42
BOTH = [Reverse]
'''

ENTRY_POINTS = """
[flowfleet.components]
Upper = ffdemo_plugin:Upper
Many = ffdemo_plugin:BOTH
Missing = ffdemo_plugin_missing:Nope
NotComponent = ffdemo_plugin:not_a_component
Shadow = ffdemo_plugin:FakeLLM

[some.other.group]
Ignored = ffdemo_plugin:Upper
"""


@pytest.fixture
def plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A plugin distribution installed the way pip leaves it: a module plus a .dist-info on sys.path."""
    (tmp_path / "ffdemo_plugin.py").write_text(PLUGIN)
    dist_info = tmp_path / "ffdemo_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: ffdemo-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    monkeypatch.syspath_prepend(str(tmp_path))
    default_registry.cache_clear()
    yield
    default_registry.cache_clear()
    sys.modules.pop("ffdemo_plugin", None)


def test_builtins() -> None:
    registry = default_registry()
    assert set(registry.names()) >= {
        "ChatInput",
        "TextInput",
        "ChatOutput",
        "TextOutput",
        "PromptTemplate",
        "LLM",
        "Retriever",
        "Router",
        "OutputParser",
    }
    assert registry.get("LLM") is LLM
    assert registry.get("Nope") is None
    assert "LLM" in registry and len(registry) == len(builtin_components())


def test_default_registry_is_cached() -> None:
    assert default_registry() is default_registry()


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("llm", "LLM"),
        ("ChatInptu", "ChatInput"),
        ("PromptTemplat", "PromptTemplate"),
        ("Retreiver", "Retriever"),
        ("Kubernetes", None),
    ],
)
def test_suggest(name: str, suggestion: str | None) -> None:
    assert default_registry().suggest(name) == suggestion


def test_register_refuses_non_components_and_conflicts() -> None:
    registry = Registry([ChatInput])
    registry.register(ChatInput)  # the same class again is harmless
    with pytest.raises(TypeError):
        registry.register(int)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        registry.register(Component)  # abstract

    class Nameless(TextInput):
        type_name = ""

    with pytest.raises(TypeError):
        registry.register(Nameless)

    class Impostor(TextInput):
        type_name = "ChatInput"

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Impostor)
    assert registry.get("ChatInput") is ChatInput


@pytest.mark.usefixtures("plugin_installed")
async def test_plugin_component_works_end_to_end(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cluster.components.registry"):
        registry = default_registry()
    assert registry.get("Upper") is not None and registry.get("Reverse") is not None
    # A broken plugin is logged and skipped; the built-in LLM is never shadowed.
    assert registry.get("LLM") is LLM
    logged = caplog.text
    assert "ffdemo_plugin_missing:Nope" in logged and "failed to load" in logged
    assert "not_a_component" in logged and "not a concrete flowfleet Component" in logged
    assert "already registered" in logged
    assert "Ignored" not in logged

    document = {
        "nodes": [
            {"id": "up", "type": "Upper", "params": {"suffix": "!"}},
            {"id": "rev", "type": "Reverse", "params": {}},
        ],
        "edges": [{"source": "up", "target": "rev"}],
    }
    flow = compile_flow(document)
    assert (await flow.run({"text": "abc"})).outputs == {"rev": "!CBA"}
    problems = validate({"nodes": [{"id": "up", "type": "Upper", "params": {"suffix": 1}}], "edges": []})
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/suffix", "invalid_params")]


@pytest.mark.usefixtures("plugin_installed")
def test_load_plugins_reports_what_it_added() -> None:
    registry = Registry(builtin_components())
    assert load_plugins(registry) == ["Upper", "Reverse"]
    assert load_plugins(Registry(), group="some.other.group") == ["Upper"]
    assert load_plugins(Registry(), group="no.such.group") == []


def test_missing_type_is_a_problem_with_a_suggestion() -> None:
    document = {
        "nodes": [{"id": "a", "type": "Uppr", "params": {}}, {"id": "b", "type": "Routr"}],
        "edges": [],
    }
    problems = [p for p in validate(document) if p.code == "unknown_type"]
    assert [p.path for p in problems] == ["/nodes/0/type", "/nodes/1/type"]
    assert "'Uppr'" in problems[0].message and "installed" in problems[0].message
    assert "did you mean 'Router'?" in problems[1].message


@pytest.mark.usefixtures("plugin_installed")
def test_installed_plugin_becomes_the_suggestion() -> None:
    problems = validate({"nodes": [{"id": "a", "type": "Uppr", "params": {}}], "edges": []})
    assert "did you mean 'Upper'?" in problems[0].message


def test_broken_metadata_listing_does_not_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def explode(**_: object) -> object:
        raise RuntimeError("corrupt site-packages")

    monkeypatch.setattr(importlib.metadata, "entry_points", explode)
    assert load_plugins(Registry()) == []
