"""The operator's web search provider: which one, its endpoint and its key (never part of a flow).

>>> search_endpoint("tavily", None)
'https://api.tavily.com/search'
>>> SearchConfig.from_environ("tavily", TAVILY_URL, {"TAVILY_API_KEY": "tvly-1"})
SearchConfig(provider='tavily', url='https://api.tavily.com/search')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cluster.settings import SettingsError

SEARCH_PROVIDERS = ("searxng", "tavily")
TAVILY_URL = "https://api.tavily.com/search"
# The operator's Tavily key is read from this variable by entry points, as the Tavily SDK reads it.
TAVILY_KEY_ENV = "TAVILY_API_KEY"


def search_endpoint(provider: str | None, url: str | None) -> str | None:
    """The search endpoint FLOWFLEET_SEARCH_PROVIDER / FLOWFLEET_SEARCH_URL give, or None when no provider
    is configured; raises SettingsError for an unknown provider or a searxng without URL."""
    if not provider:
        if url:
            raise SettingsError("FLOWFLEET_SEARCH_URL is set but FLOWFLEET_SEARCH_PROVIDER is not")
        return None
    if provider not in SEARCH_PROVIDERS:
        raise SettingsError(
            f"FLOWFLEET_SEARCH_PROVIDER={provider!r}: expected one of {', '.join(SEARCH_PROVIDERS)}"
        )
    if url:
        return url
    if provider == "tavily":
        return TAVILY_URL
    raise SettingsError("FLOWFLEET_SEARCH_PROVIDER=searxng needs FLOWFLEET_SEARCH_URL (…/search)")


@dataclass(frozen=True)
class SearchConfig:
    """Where WebSearch nodes send queries on this process; `api_key` only for tavily."""

    provider: str
    url: str
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_environ(
        cls, provider: str | None, url: str | None, environ: Mapping[str, str]
    ) -> SearchConfig | None:
        """The configuration of a policy's provider and endpoint, with the key read from `environ`."""
        if not provider or not url:
            return None
        key = (environ.get(TAVILY_KEY_ENV) or None) if provider == "tavily" else None
        return cls(provider, url, key)
