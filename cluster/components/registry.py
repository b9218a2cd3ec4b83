"""Component lookup by type name: the built-ins plus plugins from the entry-point group
``flowfleet.components``.

A plugin package declares, in its pyproject.toml::

    [project.entry-points."flowfleet.components"]
    Upper = "my_package.components:Upper"

The entry point may name one Component subclass or a list/tuple of them. A plugin that fails to import,
names something that is not a component, or reuses a taken type name is logged and skipped; it never
takes the registry (or a replica) down.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import inspect
import logging
from collections.abc import Iterable

from cluster.components.base import Component

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flowfleet.components"


class Registry:
    """A mapping from type name to component class.

    >>> from cluster.components.io import TextInput
    >>> r = Registry([TextInput])
    >>> r.get("TextInput") is TextInput, r.suggest("textinput")
    (True, 'TextInput')
    """

    def __init__(self, components: Iterable[type[Component]] = ()) -> None:
        self._classes: dict[str, type[Component]] = {}
        for cls in components:
            self.register(cls)

    def register(self, cls: type[Component]) -> None:
        """Add a component class under its `type_name`.

        Raises TypeError for something that is not a concrete Component subclass with a type name, and
        ValueError when the name is already taken by another class.
        """
        if not (inspect.isclass(cls) and issubclass(cls, Component)) or inspect.isabstract(cls):
            raise TypeError(f"{cls!r} is not a concrete flowfleet Component class")
        name = getattr(cls, "type_name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"component class {cls.__qualname__} has no type_name")
        existing = self._classes.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"component type {name!r} is already registered by {existing.__module__}")
        self._classes[name] = cls

    def get(self, type_name: str) -> type[Component] | None:
        return self._classes.get(type_name)

    def names(self) -> list[str]:
        return sorted(self._classes)

    def suggest(self, name: str) -> str | None:
        """The closest known type name, compared case-insensitively, or None if nothing is close."""
        by_lower = {known.lower(): known for known in self._classes}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        return by_lower[close[0]] if close else None

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._classes

    def __len__(self) -> int:
        return len(self._classes)


def builtin_components() -> list[type[Component]]:
    """The components that ship with flowfleet."""
    # Imported here so that importing the registry module stays cheap and free of cycles.
    from cluster.components.agent import Agent
    from cluster.components.history import MessageHistory
    from cluster.components.huggingface import HuggingFaceLLM
    from cluster.components.io import ChatInput, ChatOutput, TextInput, TextOutput
    from cluster.components.llm import LLM
    from cluster.components.parser import OutputParser
    from cluster.components.prompt import PromptTemplate
    from cluster.components.retriever import Retriever
    from cluster.components.router import Router
    from cluster.components.structured import StructuredOutput
    from cluster.components.tools.calculator import Calculator
    from cluster.components.tools.current_date import CurrentDate
    from cluster.components.tools.url_fetch import URLFetch
    from cluster.components.tools.web_search import WebSearch

    return [
        ChatInput,
        TextInput,
        ChatOutput,
        TextOutput,
        PromptTemplate,
        LLM,
        HuggingFaceLLM,
        StructuredOutput,
        Retriever,
        Router,
        OutputParser,
        Agent,
        MessageHistory,
        Calculator,
        CurrentDate,
        URLFetch,
        WebSearch,
    ]


def _plugin_classes(loaded: object) -> list[object]:
    if isinstance(loaded, list | tuple):
        return list(loaded)
    return [loaded]


def load_plugins(registry: Registry, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register every component advertised in the entry-point `group`; returns the type names added."""
    added: list[str] = []
    try:
        entry_points = list(importlib.metadata.entry_points(group=group))
    except Exception:  # broken metadata on sys.path must not stop a replica
        logger.exception("could not list entry points of group %s", group)
        return added
    for ep in entry_points:
        try:
            loaded = ep.load()
        except Exception:
            logger.exception("skipping component plugin %s (%s): it failed to load", ep.name, ep.value)
            continue
        for cls in _plugin_classes(loaded):
            try:
                registry.register(cls)  # type: ignore[arg-type]  # checked inside register
            except (TypeError, ValueError) as e:
                logger.error("skipping component plugin %s (%s): %s", ep.name, ep.value, e)
                continue
            added.append(cls.type_name)  # type: ignore[attr-defined]
            logger.info("loaded component plugin %s from %s", cls.type_name, ep.value)  # type: ignore[attr-defined]
    return added


@functools.cache
def default_registry() -> Registry:
    """Built-ins plus installed plugins, built once per process (`default_registry.cache_clear()` to reload).

    Built-ins are registered first, so a plugin cannot shadow one of them.
    """
    registry = Registry(builtin_components())
    load_plugins(registry)
    return registry
