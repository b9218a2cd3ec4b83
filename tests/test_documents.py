"""load_document: flowfleet documents pass through, LangFlow exports arrive converted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.errors import FlowValidationError
from cluster.flow.documents import LANGFLOW_MAX_BYTES, load_document
from cluster.flow.validation import Limits, validate
from cluster.langflow import LangflowImportError

DATA = Path(__file__).parent / "data" / "langflow"
FLOWS = Path(__file__).parent.parent / "flows"


def test_a_flowfleet_document_is_returned_as_parsed() -> None:
    raw = (FLOWS / "support_qa.json").read_bytes()
    assert load_document(raw) == json.loads(raw)


def test_a_langflow_export_is_converted_and_named() -> None:
    raw = (DATA / "basic_prompting.json").read_bytes()
    document = load_document(raw, name="basic")
    assert document["name"] == "basic"
    assert "data" not in document and document["nodes"]
    assert validate(document) == []
    assert "code" not in json.dumps(document["nodes"])


def test_an_unsupported_export_names_every_bad_node() -> None:
    with pytest.raises(LangflowImportError) as caught:
        load_document((DATA / "unsupported.json").read_bytes())
    assert len(caught.value.details["unsupported"]) >= 2


def test_a_large_export_is_read_when_its_conversion_fits() -> None:
    export = json.loads((DATA / "basic_prompting.json").read_bytes())
    # Embedded component code is what makes real exports large; it is dropped by the conversion.
    export["data"]["nodes"][0]["data"]["node"]["template"]["code"]["value"] = "#" * 200_000
    raw = json.dumps(export).encode()
    limits = Limits(max_document_bytes=100_000)
    assert len(raw) > limits.max_document_bytes
    assert load_document(raw, limits, name="big")["name"] == "big"


def test_a_large_flowfleet_document_is_still_too_large() -> None:
    doc = json.loads((FLOWS / "support_qa.json").read_bytes())
    doc["description"] = "x" * 200_000
    with pytest.raises(FlowValidationError) as caught:
        load_document(json.dumps(doc), Limits(max_document_bytes=100_000))
    assert [p.code for p in caught.value.problems] == ["too_large"]


def test_nothing_beyond_the_export_ceiling_is_parsed() -> None:
    raw = b'{"data": {"nodes": [], "edges": []}, "pad": "' + b"x" * LANGFLOW_MAX_BYTES + b'"}'
    with pytest.raises(FlowValidationError) as caught:
        load_document(raw)
    assert [p.code for p in caught.value.problems] == ["too_large"]
