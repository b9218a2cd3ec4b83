"""`flowfleet worker` is registered and its logging configuration is valid."""

from __future__ import annotations

import logging
import logging.config

from cluster.logfmt import KeyValueFormatter, logging_config
from control.cli import build_parser
from worker.serve import handle


def test_worker_subcommand_parses_host_and_port():
    args = build_parser().parse_args(["worker", "--host", "127.0.0.1", "--port", "8123"])
    assert (args.host, args.port, args.func) == ("127.0.0.1", 8123, handle)
    defaults = build_parser().parse_args(["worker"])
    assert (defaults.host, defaults.port, defaults.log_level) == ("0.0.0.0", 8000, "INFO")


def test_logging_config_is_accepted_by_dictconfig():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logging.config.dictConfig(logging_config("DEBUG", quiet=("uvicorn.access",)))
        assert root.level == logging.DEBUG
        # The control plane's format: ts=… level=… logger=… msg="…".
        assert [type(h.formatter) for h in root.handlers if h not in saved[1]] == [KeyValueFormatter]
        assert logging.getLogger("uvicorn.access").level == logging.WARNING
    finally:
        for handler in root.handlers:
            if handler not in saved[1]:
                root.removeHandler(handler)
        root.setLevel(saved[0])
        for handler in saved[1]:
            if handler not in root.handlers:
                root.addHandler(handler)


def run_worker_command(env_extra: dict[str, str]):
    import os
    import subprocess
    import sys

    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "worker", "--port", "1"], env=env, capture_output=True, text=True, timeout=60
    )


def test_bad_settings_fail_with_one_line_and_exit_code_2():
    done = run_worker_command({"FLOWFLEET_RECONCILE_S": "soon"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "flowfleet: FLOWFLEET_RECONCILE_S='soon' is not a valid float"
    )


def test_bad_redis_url_and_replica_id_fail_before_listening():
    done = run_worker_command({"FLOWFLEET_REDIS_URL": "http://cache.internal"})
    assert done.returncode == 2 and "unsupported Redis URL scheme" in done.stderr
    done = run_worker_command({"FLOWFLEET_REPLICA_ID": "has space"})
    assert done.returncode == 2 and "invalid replica id" in done.stderr
