"""Canary bucketing, percent and session-id checks, and pin values (pure, no Redis)."""

from __future__ import annotations

import math

import pytest

from cluster.traffic.canary import (
    BUCKETS,
    InvalidPercent,
    InvalidRequestKey,
    InvalidSessionId,
    Pin,
    bucket,
    check_percent,
    check_request_key,
    check_session_id,
    is_canary,
    threshold,
)

KEYS = [f"user-{i}" for i in range(10_000)]


def test_bucket_is_deterministic_in_range_and_independent_per_flow() -> None:
    buckets = [bucket("support_qa", k) for k in KEYS]
    assert buckets == [bucket("support_qa", k) for k in KEYS]
    assert all(0 <= b < BUCKETS for b in buckets)
    other = [bucket("rag_qa", k) for k in KEYS]
    # The same users are not always the canary users of every flow.
    assert sum(a == b for a, b in zip(buckets, other, strict=True)) < 50
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert bucket("ab", "c") != bucket("a", "bc")


@pytest.mark.parametrize("percent", [1, 5, 10, 25, 33.3, 50, 90])
def test_observed_split_over_10000_keys_is_within_one_point(percent: float) -> None:
    canary = sum(is_canary(bucket("support_qa", k), percent) for k in KEYS)
    observed = canary / len(KEYS) * 100
    assert abs(observed - percent) <= 1.0, (percent, observed)


def test_edges_of_the_percentage() -> None:
    assert not any(is_canary(bucket("qa", k), 0) for k in KEYS[:2000])
    assert all(is_canary(bucket("qa", k), 100) for k in KEYS[:2000])
    assert threshold(10) == 1000 and threshold(0.25) == 25 and threshold(100) == BUCKETS
    # Raising the percentage only adds canary users: nobody on the canary at 10 % leaves it at 50 %.
    at10 = {k for k in KEYS if is_canary(bucket("qa", k), 10)}
    at50 = {k for k in KEYS if is_canary(bucket("qa", k), 50)}
    assert at10 < at50


@pytest.mark.parametrize("value", [0, 10, 12.5, 100, 99.999])
def test_valid_percentages(value: float) -> None:
    assert check_percent(value) == round(float(value), 2)


@pytest.mark.parametrize("value", [-1, 100.5, "10", None, True, math.nan, math.inf, [10]])
def test_invalid_percentages_are_400(value: object) -> None:
    with pytest.raises(InvalidPercent) as caught:
        check_percent(value)
    assert caught.value.http_status == 400 and caught.value.code == "invalid_percent"


@pytest.mark.parametrize("value", ["s", "chat-42", "a.b:c@d_e-f", "x" * 128])
def test_valid_session_ids(value: str) -> None:
    assert check_session_id(value) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "-lead", "has space", "brace{", "star*", 42, None, "é"])
def test_invalid_session_ids_are_422(value: object) -> None:
    with pytest.raises(InvalidSessionId) as caught:
        check_session_id(value)
    assert caught.value.http_status == 422 and caught.value.details == {"field": "session_id"}


def test_request_keys() -> None:
    assert check_request_key("any text, even spaces", "user_id") == "any text, even spaces"
    assert check_request_key(42, "user_id") == "42"
    for bad in ("", "x" * 257, None, True, 1.5, {"a": 1}):
        with pytest.raises(InvalidRequestKey):
            check_request_key(bad, "user_id")


def test_pin_round_trip_and_unusable_values() -> None:
    pin = Pin("ab" * 32, 7, 1764105308.123456)
    assert Pin.decode(pin.encode()) == pin
    assert Pin.decode(pin.encode().decode()) == pin
    for raw in (None, b"", b"not json", b"[]", b'{"hash": "short", "generation": 1}', b'{"generation": 1}',
                b'{"hash": "' + b"ab" * 32 + b'", "generation": "x"}'):  # fmt: skip
        assert Pin.decode(raw) is None, raw


def test_pins_older_than_the_unpin_generation_are_not_honoured() -> None:
    pin = Pin("ab" * 32, 5, 0.0)
    assert pin.honoured(0) and pin.honoured(5)
    assert not pin.honoured(6)
