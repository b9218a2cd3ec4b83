"""Key layout: one namespace prefix, per-flow keys in one Redis Cluster slot, names validated."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from cluster.names import InvalidName, check_flow_name
from cluster.store.keys import Keys

DIGEST = "ab" * 32


def per_flow_keys(keys: Keys, flow: str) -> list[str]:
    return [
        keys.release(flow), keys.history(flow), keys.versions(flow), keys.blob(flow, DIGEST),
        keys.meta(flow, DIGEST), keys.flow_audit(flow),
    ]  # fmt: skip


def test_layout() -> None:
    k = Keys("flowfleet")
    assert k.release("support_qa") == "flowfleet:{support_qa}:release"
    assert k.blob("support_qa", DIGEST) == f"flowfleet:{{support_qa}}:blob:{DIGEST}"
    assert k.channel() == "flowfleet:events"
    assert k.replica("web-1") == "flowfleet:replica:web-1"
    assert Keys().namespace == "flowfleet"


def test_every_key_carries_the_namespace() -> None:
    k = Keys("staging")
    keys = [*per_flow_keys(k, "qa"), k.flows(), k.channel(), k.audit(), k.replicas(), k.replica("r1")]
    assert all(key.startswith("staging:") for key in keys)
    assert len(set(keys)) == len(keys)
    assert all(key.startswith(k.flow_prefix("qa")) for key in per_flow_keys(k, "qa"))


@pytest.mark.parametrize("flow", ["support_qa", "a", "Flow.v2-beta", "x" * 128])
def test_one_flows_keys_share_a_cluster_slot(flow: str) -> None:
    slots = {key_slot(key.encode()) for key in per_flow_keys(Keys("ff"), flow)}
    assert len(slots) == 1
    assert slots == {key_slot(flow.encode())}


def test_different_flows_spread_over_slots() -> None:
    slots = {key_slot(Keys().release(f"flow{i}").encode()) for i in range(50)}
    assert len(slots) > 40


@pytest.mark.parametrize("bad", ["", "-lead", "has space", "a{b}", "a:b", "ü", "x" * 129, "a/b", "a*"])
def test_bad_flow_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_flow_name(bad)
    with pytest.raises(InvalidName):
        Keys().release(bad)


@pytest.mark.parametrize("bad", ["", "a b", "a:b", "{x}", "x" * 65])
def test_bad_namespaces_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        Keys(bad)
