"""`python -m control.cli ...` is the `flowfleet` command (used to start child processes by path)."""

import sys

from control.cli import main

sys.exit(main())
