"""Request keys and canary routing on a replica (pure: no Redis, no HTTP)."""

from __future__ import annotations

import random

import pytest

from cluster.traffic.canary import InvalidRequestKey, InvalidSessionId, bucket, is_canary
from tests.worker_support import ToyCompiler
from worker.routing import route, run_keys, variant_of
from worker.state import CanaryVersion, LoadedFlow

S, C = "a" * 64, "c" * 64


def loaded(percent: float | None) -> LoadedFlow:
    compiler = ToyCompiler()
    stable = compiler(b'{"label": "stable"}')
    canary = None if percent is None else CanaryVersion(C, compiler(b'{"label": "canary"}'), percent, 5.0)
    return LoadedFlow("qa", stable, S, 4, 0.0, canary)


def test_key_precedence_header_then_user_then_session() -> None:
    body = {"user_id": "u1", "session_id": "s1"}
    assert run_keys({"x-flowfleet-key": "h1"}, body).key == "h1"
    assert run_keys({}, body).key == "u1" and run_keys({}, body).session_id == "s1"
    assert run_keys({}, {"session_id": "s1"}).key == "s1"
    assert run_keys({}, {"user_id": 7}).key == "7"
    none = run_keys({}, {"inputs": {"user_id": "ignored"}})
    assert none.key is None and none.session_id is None


def test_unusable_keys_are_refused() -> None:
    with pytest.raises(InvalidSessionId):
        run_keys({}, {"session_id": "no spaces please"})
    with pytest.raises(InvalidRequestKey):
        run_keys({}, {"user_id": ""})
    with pytest.raises(InvalidRequestKey):
        run_keys({"x-flowfleet-key": "k" * 300}, {})


def test_route_follows_the_pure_bucketing() -> None:
    flow = loaded(30)
    keys = [f"user-{i}" for i in range(2000)]
    for key in keys:
        served = route(flow, key)
        expected = is_canary(bucket("qa", key), 30)
        assert (served.hash, served.variant) == ((C, "canary") if expected else (S, "stable"))
        assert served.generation == 4 and not served.pinned


def test_route_without_a_canary_or_at_the_edges() -> None:
    assert {route(loaded(None), f"k{i}").hash for i in range(200)} == {S}
    assert {route(loaded(0), f"k{i}").hash for i in range(200)} == {S}
    assert {route(loaded(100), f"k{i}").hash for i in range(200)} == {C}


def test_keyless_runs_are_split_at_random() -> None:
    rng = random.Random(7)
    canary = sum(route(loaded(20), None, rng).variant == "canary" for _ in range(5000))
    assert 800 < canary < 1200


def test_variant_names() -> None:
    flow = loaded(10)
    assert [variant_of(flow, h) for h in (S, C, "f" * 64)] == ["stable", "canary", "pinned"]
