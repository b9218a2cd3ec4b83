"""A release event made usable: the release record it announces and a small version's bytes, carried in
the event by the script that wrote the record (docs/protocol.md, *What a release event carries*), so a
replica swaps without a read. Whatever is missing or does not check out is read from Redis instead.

The bytes are trusted only once they hash to their name, exactly like bytes fetched from Redis; the
record only when it is the release the event announces (same flow, generation and hash).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from cluster.flow.hashing import sha256_hex
from cluster.store.events import Prepare, ReleaseChanged
from cluster.store.release import CorruptRecord, Release
from worker.ports import ReleaseReader, Target

log = logging.getLogger(__name__)


def carried_release(event: ReleaseChanged) -> Release | None:
    """The release record the event carries, if it is the one the event announces."""
    carried = event.carried
    if carried is None or carried.record is None:
        return None
    try:
        release = Release.from_hash(event.flow, carried.record)
    except CorruptRecord as e:
        log.warning("release event flow=%s carried an unreadable record (%s); reading it", event.flow, e)
        return None
    if release is None or (release.generation, release.hash) != (event.generation, event.hash):
        log.warning(
            "release event flow=%s generation=%d carried another release's record; reading it instead",
            event.flow, event.generation,
        )  # fmt: skip
        return None
    return release


def carried_blob(event: ReleaseChanged | Prepare) -> tuple[str, bytes] | None:
    """(hash, bytes) of the version the event (a release or a prepare) carries, unverified: they are
    hashed only if the loader takes them (`OfferedBlobs.take`), as a held version needs none."""
    carried = event.carried
    if carried is None or carried.blob is None or carried.blob_hash is None:
        return None
    return carried.blob_hash, carried.blob


async def read_release(store: ReleaseReader, event: ReleaseChanged) -> Target | None:
    """The release record read for an event that carried none: one older than the event (or missing)
    is read once more, then taken as it is (rule 7). Raises what the store raises."""
    record = await store.get_release(event.flow)
    if record is None or record.generation < event.generation:
        record = await store.get_release(event.flow)
    if record is None or record.generation < event.generation:
        log.warning(
            "release event flow=%s generation=%d hash=%s is newer than its release record (%s); "
            "following the record", event.flow, event.generation, event.hash[:12],
            "none" if record is None else f"generation {record.generation}",
        )  # fmt: skip
    return record


class OfferedBlobs:
    """Version bytes from events, waiting for the loader: taken once and verified then, at most `keep`
    held (the oldest is dropped; the loader then fetches it as usual)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._blobs: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def put(self, flow: str, digest: str, data: bytes) -> None:
        self._blobs[(flow, digest)] = data
        self._blobs.move_to_end((flow, digest))
        while len(self._blobs) > self.keep:
            self._blobs.popitem(last=False)

    def take(self, flow: str, digest: str) -> bytes | None:
        """The bytes offered for `digest`, once they hash to it; None otherwise (then fetch them)."""
        data = self._blobs.pop((flow, digest), None)
        if data is not None and sha256_hex(data) != digest:
            log.warning(
                "flow=%s: the bytes an event carried do not hash to %s; fetching them instead",
                flow, digest[:12],
            )  # fmt: skip
            return None
        return data

    def drop(self, flow: str, digest: str) -> None:
        """Forget the bytes offered for `digest` (not needed after all), unhashed."""
        self._blobs.pop((flow, digest), None)

    def __len__(self) -> int:
        return len(self._blobs)
