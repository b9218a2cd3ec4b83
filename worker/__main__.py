"""`python -m worker [--host H] [--port P]`: the same as `flowfleet worker`, without the control CLI."""

from __future__ import annotations

import argparse
import sys

from cluster.errors import FlowfleetError
from worker.serve import DESCRIPTION, add_arguments, handle


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=DESCRIPTION)
    add_arguments(parser)
    try:
        return handle(parser.parse_args(argv))
    except FlowfleetError as e:  # the one-line error and exit code `flowfleet worker` gives
        print(f"flowfleet: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
