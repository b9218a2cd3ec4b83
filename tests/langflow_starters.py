"""LangFlow 1.13's starter projects, read from the pinned `langflow-base` wheel (for the tests only).

The wheel is downloaded once from PyPI into a cache directory outside the repository
(`$FLOWFLEET_TEST_CACHE`, else `~/.cache/flowfleet-test`), checked against its pinned sha256, and read
with zipfile in memory: nothing of LangFlow's is unpacked or kept in the repository. A download that
fails or a file whose hash differs raises StarterFetchError: the tests that use it fail, never skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import httpx

VERSION = "1.13.0"
WHEEL = f"langflow_base-{VERSION}-py3-none-any.whl"
SHA256 = "e15db23e16cf27d6d1ac8fcc5030cf25ad3a04356a9581862b4e97de739dd3a2"
JSON_API = f"https://pypi.org/pypi/langflow-base/{VERSION}/json"
# PEP 691's JSON form of the simple index: the fallback where the JSON API does not answer.
SIMPLE_API = "https://pypi.org/simple/langflow-base/"
STARTERS = "langflow/initial_setup/starter_projects/"
TIMEOUT = httpx.Timeout(30.0, read=120.0)


class StarterFetchError(RuntimeError):
    """The pinned wheel could not be fetched, or is not the file it should be."""


def cache_dir() -> Path:
    configured = os.environ.get("FLOWFLEET_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "flowfleet-test"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel_url(client: httpx.Client) -> str:
    """The wheel's files URL, from PyPI's JSON API, else from its simple index (PEP 691)."""
    reply = client.get(JSON_API)
    if reply.status_code == 200:
        files = reply.json().get("urls", [])
    else:
        reply = client.get(SIMPLE_API, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        if reply.status_code != 200:
            raise StarterFetchError(f"PyPI answered {reply.status_code} for {SIMPLE_API}")
        files = reply.json().get("files", [])
    for entry in files:
        if entry.get("filename") == WHEEL and isinstance(entry.get("url"), str):
            url: str = entry["url"]
            return url
    raise StarterFetchError(f"PyPI lists no {WHEEL}")


def wheel_path() -> Path:
    """The cached, verified wheel; downloaded first when missing or not matching the pinned hash."""
    path = cache_dir() / WHEEL
    if path.is_file() and _sha256(path) == SHA256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.part")
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
            url = _wheel_url(client)
            with client.stream("GET", url) as response, partial.open("wb") as out:
                if response.status_code != 200:
                    raise StarterFetchError(f"downloading {url}: HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    out.write(chunk)
    except httpx.HTTPError as e:
        partial.unlink(missing_ok=True)
        raise StarterFetchError(f"cannot fetch {WHEEL}: {e!r}") from e
    actual = _sha256(partial)
    if actual != SHA256:
        partial.unlink(missing_ok=True)
        raise StarterFetchError(f"{WHEEL} has sha256 {actual}, expected {SHA256}")
    partial.replace(path)
    return path


def starter_projects() -> dict[str, dict[str, Any]]:
    """Every starter project of the pinned wheel: its file name without `.json` → the export."""
    projects: dict[str, dict[str, Any]] = {}
    with zipfile.ZipFile(wheel_path()) as wheel:
        for name in wheel.namelist():
            if name.startswith(STARTERS) and name.endswith(".json") and "/" not in name[len(STARTERS) :]:
                projects[name[len(STARTERS) : -len(".json")]] = json.loads(wheel.read(name))
    return dict(sorted(projects.items()))
