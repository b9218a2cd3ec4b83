"""`python -m worker [--host H] [--port P]`: the same as `flowfleet worker`."""

from __future__ import annotations

import sys

from control.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
