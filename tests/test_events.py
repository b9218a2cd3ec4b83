"""Event encode/decode: round trips, and every kind of unusable payload dropped without raising."""

from __future__ import annotations

import dataclasses
import logging

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.store import events
from cluster.store.events import EVENT_TYPES, Ping, ReleaseChanged, decode, encode, release_payload_parts

HASH = "ab" * 32
RELEASE = ReleaseChanged(flow="support_qa", hash=HASH, generation=7, by="ci", at=1764000000.25)


def payload(**changes: object) -> bytes:
    body = orjson.loads(encode(RELEASE))
    body.update(changes)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_release_payload_is_versioned_json_with_every_field() -> None:
    assert orjson.loads(encode(RELEASE)) == {
        "v": 1, "type": "release", "flow": "support_qa", "hash": HASH, "generation": 7, "by": "ci",
        "at": 1764000000.25, "action": "activate",
    }  # fmt: skip


def test_round_trip() -> None:
    assert decode(encode(RELEASE)) == RELEASE
    rollback = dataclasses.replace(RELEASE, action="rollback")
    assert decode(encode(rollback)) == rollback
    ping = Ping(by="control-1", at=5.0)
    assert orjson.loads(encode(ping)) == {"v": 1, "type": "ping", "by": "control-1", "at": 5.0}
    assert decode(encode(ping)) == ping
    assert decode(encode(ping).decode()) == ping  # str input as delivered by decode_responses clients


@given(
    flow=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    generation=st.integers(min_value=1, max_value=2**53),
    by=st.text(max_size=30),
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    action=st.sampled_from(["activate", "rollback", "commit"]),
)
def test_parts_reassemble_to_encode(flow: str, generation: int, by: str, at: float, action: str) -> None:
    event = ReleaseChanged(flow=flow, hash=HASH, generation=generation, by=by, at=at, action=action)
    head, tail = release_payload_parts(flow=flow, hash=HASH, by=by, at=at, action=action)
    assert head + str(generation).encode() + tail == encode(event)
    assert decode(encode(event)) == event


def test_unknown_fields_are_ignored_and_missing_defaults_apply() -> None:
    assert decode(payload(replica_hint="x", extra={"nested": [1]})) == RELEASE
    assert decode(payload(action=...)) == RELEASE  # "action" is optional and defaults to "activate"
    assert decode(payload(at=1764000000)) == dataclasses.replace(RELEASE, at=1764000000.0)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"v": 1, "type": "release"',
        b"[1, 2]",
        b'"release"',
        b"\xff\xfe",
        payload(v=2),
        payload(v="1"),
        payload(v=True),
        payload(v=...),
        payload(type=...),
        payload(type=["release"]),
        payload(type="teleport"),
        payload(flow=...),
        payload(flow=""),
        payload(flow=3),
        payload(hash="abc"),
        payload(hash=HASH.upper()),
        payload(generation="7"),
        payload(generation=7.0),
        payload(generation=0),
        payload(generation=True),
        encode(RELEASE).replace(b'"generation":7', b'"generation":1180591620717411303424'),
        payload(by=None),
        payload(at="now"),
        payload(at=False),
        payload(action=1),
    ],
)
def test_unusable_payloads_decode_to_none(raw: bytes) -> None:
    assert decode(raw) is None


def test_drops_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cluster.store.events"):
        decode(b"garbage")
        decode(payload(type="canary_started"))
        decode(payload(generation="x"))
    levels = [(r.levelno, r.getMessage().split(" ")[0]) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "dropping"),
        (logging.DEBUG, "ignoring"),
        (logging.WARNING, "dropping"),
    ]


@given(st.binary(max_size=200))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    result = decode(raw)
    assert result is None or isinstance(result, ReleaseChanged | Ping)


def test_every_event_field_has_a_decodable_type() -> None:
    for cls in EVENT_TYPES.values():
        for field in dataclasses.fields(cls):
            if field.metadata.get("wire", True):
                assert str(field.type) in events._FIELD_TYPES, (cls.TYPE, field.name, field.type)
    # The one field that is not checked on the wire is what a release event carries (test_event_carry).
    assert [f.name for f in dataclasses.fields(ReleaseChanged) if not f.metadata.get("wire", True)] == [
        "carried"
    ]


def test_prepare_and_abort_round_trip() -> None:
    prepare = events.Prepare("qa", "ab" * 32, "9f2c01", 8, "ci", 1.5, timeout_s=10.0)
    abort = events.Abort("qa", "9f2c01", "ci", 2.5, "r3: invalid_document")
    assert decode(encode(prepare)) == prepare and decode(encode(abort)) == abort
    assert (
        orjson.loads(encode(prepare))["type"] == "prepare" and orjson.loads(encode(abort))["type"] == "abort"
    )


@pytest.mark.parametrize(
    "payload",
    [
        {
            "type": "prepare",
            "flow": "qa",
            "hash": "nothex",
            "rollout": "r",
            "generation": 2,
            "by": "c",
            "at": 1,
        },
        {
            "type": "prepare",
            "flow": "qa",
            "hash": "ab" * 32,
            "rollout": "",
            "generation": 2,
            "by": "c",
            "at": 1,
        },
        {
            "type": "prepare",
            "flow": "qa",
            "hash": "ab" * 32,
            "rollout": "r",
            "generation": 0,
            "by": "c",
            "at": 1,
        },
        {"type": "abort", "flow": "", "rollout": "r", "by": "c", "at": 1},
        {"type": "abort", "flow": "qa", "by": "c", "at": 1},
    ],
)
def test_unusable_prepare_and_abort_events_decode_to_none(payload: dict[str, object]) -> None:
    assert decode(orjson.dumps({"v": 1, **payload})) is None
