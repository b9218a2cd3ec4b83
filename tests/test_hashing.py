"""Canonical form and content addresses."""

from cluster.flow.hashing import canonical_bytes, content_address, is_hash_prefix


def test_key_order_and_spacing_do_not_change_the_hash() -> None:
    a = {"nodes": [{"id": "x", "type": "T", "params": {"b": 1, "a": 2}}], "edges": []}
    b = {"edges": [], "nodes": [{"params": {"a": 2, "b": 1}, "type": "T", "id": "x"}]}
    assert content_address(a) == content_address(b)
    assert canonical_bytes(a) == b'{"edges":[],"nodes":[{"id":"x","params":{"a":2,"b":1},"type":"T"}]}'


def test_different_content_gives_a_different_hash() -> None:
    assert content_address({"a": 1})[1] != content_address({"a": 2})[1]


def test_hash_prefix_rules() -> None:
    assert is_hash_prefix("0123abcd")
    assert not is_hash_prefix("0123abc")
    assert not is_hash_prefix("0123ABCD")
