"""Release and version metadata values: Redis forms, unreadable records, and rollback target choice."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from cluster.store.release import (
    CorruptRecord,
    GcResult,
    NoPreviousRelease,
    Release,
    ReleaseNotFound,
    VersionMeta,
    rollback_target,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64


def release(generation: int, digest: str, previous: str | None = None, action: str = "activate") -> Release:
    return Release("qa", digest, generation, previous, "dev", 100.0 + generation, "why", action)


def test_release_from_a_redis_hash() -> None:
    raw = {
        b"hash": A.encode(), b"generation": b"3", b"previous_hash": b"", b"activated_by": b"ci",
        b"activated_at": b"1764105308.25", b"reason": b"fix", b"action": b"rollback",
    }  # fmt: skip
    assert Release.from_hash("qa", raw) == Release("qa", A, 3, None, "ci", 1764105308.25, "fix", "rollback")
    assert Release.from_hash("qa", {k.decode(): v.decode() for k, v in raw.items()}) is not None
    assert Release.from_hash("qa", {}) is None


@pytest.mark.parametrize("broken", [{b"generation": b"3"}, {b"hash": A.encode(), b"generation": b"three"}])
def test_an_unreadable_release_record_is_a_clear_error(broken: dict[bytes, bytes]) -> None:
    with pytest.raises(CorruptRecord) as caught:
        Release.from_hash("qa", broken)
    assert "qa" in str(caught.value) and caught.value.http_status == 500


def test_history_entries_round_trip_and_bad_ones_are_skipped() -> None:
    r = release(2, B, A)
    assert Release.from_json("qa", r.to_json()) == r
    for bad in (b"{", b"[]", b'{"hash": "x"}', b'{"hash": "x", "generation": "two"}', b"null"):
        assert Release.from_json("qa", bad) is None


def test_no_previous_release_reads_the_same_however_it_was_written() -> None:
    record = {b"hash": A.encode(), b"generation": b"1", b"previous_hash": b"", b"activated_at": b"5.0"}
    from_record = Release.from_hash("qa", record)
    assert from_record is not None and from_record.previous_hash is None
    entry = {"hash": A, "generation": 1, "activated_at": 5.0}
    for written in ({"previous_hash": ""}, {"previous_hash": None}, {}, {"previous_hash": 7}):
        assert Release.from_json("qa", orjson.dumps(entry | written)) == from_record


def test_version_meta_round_trip() -> None:
    meta = VersionMeta("qa", A, "alice", "first", 1764105290.5, 1834, 5, None)
    raw = {k.encode(): v.encode() for k, v in meta.to_hash().items()}
    assert VersionMeta.from_hash("qa", A, raw) == meta
    assert VersionMeta.from_hash("qa", A, {}) is None
    with pytest.raises(CorruptRecord):
        VersionMeta.from_hash("qa", A, {b"author": b"alice"})


def test_gc_result_summary() -> None:
    result = GcResult(removed={"qa": (A, B), "x": (C,)}, kept=4, bytes_freed=99)
    assert result.removed_count == 3
    assert result.as_dict() == {
        "removed": {"qa": [A, B], "x": [C]}, "removed_count": 3, "kept": 4, "bytes_freed": 99,
    }  # fmt: skip


def test_rollback_target_defaults_to_the_previous_different_version() -> None:
    history = [release(3, C, B), release(2, B, A), release(1, A)]
    assert rollback_target("qa", history[0], history).hash == B
    # Re-activations of the current version are skipped.
    history = [release(3, B, B), release(2, B, A), release(1, A)]
    assert rollback_target("qa", history[0], history).generation == 1
    # A rollback of a rollback returns to what was rolled back.
    history = [release(4, B, C, "rollback"), release(3, C, B), release(2, B, A)]
    assert rollback_target("qa", history[0], history).hash == C


def test_rollback_target_uses_the_record_not_the_newest_history_entry() -> None:
    # History lost its newest entry (or was trimmed oddly): the current record still decides.
    current = release(5, C, B)
    history = [release(4, C, B), release(3, B, A)]
    assert rollback_target("qa", current, history).hash == B


def test_rollback_target_to_a_generation_and_errors() -> None:
    history = [release(2, B, A), release(1, A)]
    assert rollback_target("qa", history[0], history, to_generation=1).hash == A
    with pytest.raises(ReleaseNotFound):
        rollback_target("qa", history[0], history, to_generation=7)
    with pytest.raises(NoPreviousRelease):
        rollback_target("qa", None, [])
    with pytest.raises(NoPreviousRelease):
        rollback_target("qa", history[1], history[1:])


def test_releases_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        release(1, A).hash = B  # type: ignore[misc]
