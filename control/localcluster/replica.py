"""`python -m control.localcluster.replica`: one replica bound with SO_REUSEPORT (`flowfleet worker
--reuse-port`), so several replicas share one address and the kernel spreads connections across them.
Settings come from FLOWFLEET_* environment variables.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from control.cli import main as cli_main
from control.cli.worker import reuse_port_socket

__all__ = ["main", "reuse_port_socket"]


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["worker", *(argv if argv is not None else sys.argv[1:]), "--reuse-port"])


if __name__ == "__main__":
    sys.exit(main())
