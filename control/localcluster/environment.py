"""What the local fleet's processes inherit from the shell that runs `flowfleet up`.

`up` owns the settings that say where the fleet's state is — its Redis, its namespace, its admin token,
each replica's id — so a `FLOWFLEET_REDIS_URL` exported for another deployment can never point the
local fleet at the wrong Redis: those are dropped (and named in a warning). The CLI's own settings
(`FLOWFLEET_URL`, `FLOWFLEET_TOKEN`) mean nothing to a server and are dropped too. Every other setting
reaches the control plane and the replicas unchanged, so roles, run tokens, the outbound policy,
secrets and timeouts can be tried locally:

>>> env = child_environment({"FLOWFLEET_REDIS_URL": "redis://prod", "FLOWFLEET_EGRESS_ALLOW": "none",
...                          "OPENAI_API_KEY": "sk-x", "PATH": "/bin"}, Path("/repo"))
>>> sorted(env.base), env.passed, env.ignored
(['FLOWFLEET_EGRESS_ALLOW', 'OPENAI_API_KEY', 'PATH'], ('FLOWFLEET_EGRESS_ALLOW',), ('FLOWFLEET_REDIS_URL',))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster.settings import Settings

PREFIX = "FLOWFLEET_"
# Set by `up` for each child; a value from the shell is ignored.
OWNED = ("FLOWFLEET_REDIS_URL", "FLOWFLEET_NAMESPACE", "FLOWFLEET_ADMIN_TOKEN", "FLOWFLEET_REPLICA_ID")
# Read by the command line only (which control plane to call, with which token).
CLIENT_ONLY = ("FLOWFLEET_URL", "FLOWFLEET_TOKEN")
# File paths: the children run in the state directory, so a relative path is made absolute first.
PATHS = ("FLOWFLEET_TOKENS_FILE", "FLOWFLEET_RUN_TOKENS_FILE")
SEPARATOR = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class ChildEnvironment:
    base: dict[str, str]  # what every child starts from (`up` adds the settings it owns)
    passed: tuple[str, ...]  # FLOWFLEET_* settings taken from the shell
    ignored: tuple[str, ...]  # settings the shell set that `up` owns or that only the CLI reads
    secrets: tuple[tuple[str, bool], ...]  # FLOWFLEET_FLOW_SECRETS names, and whether the shell sets each

    def path(self, name: str) -> Path | None:
        value = self.base.get(name)
        return Path(value) if value else None

    @property
    def tokens_file(self) -> Path | None:
        return self.path("FLOWFLEET_TOKENS_FILE")

    @property
    def run_tokens_file(self) -> Path | None:
        return self.path("FLOWFLEET_RUN_TOKENS_FILE")


def child_environment(environ: Mapping[str, str], cwd: Path) -> ChildEnvironment:
    """Split the shell's environment into what the children get and what `up` drops."""
    base: dict[str, str] = {}
    passed: list[str] = []
    ignored: list[str] = []
    for name, value in sorted(environ.items()):
        if not name.startswith(PREFIX):
            base[name] = value
        elif name in OWNED or name in CLIENT_ONLY:
            if value:
                ignored.append(name)
        else:
            base[name] = str(cwd / value) if name in PATHS and value else value
            passed.append(name)
    names = environ.get("FLOWFLEET_FLOW_SECRETS") or Settings().flow_secrets
    secrets = tuple((n, bool(environ.get(n))) for n in SEPARATOR.split(names) if n)
    return ChildEnvironment(base, tuple(passed), tuple(ignored), secrets)
