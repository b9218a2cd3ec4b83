"""Read a flow document from bytes: a flowfleet document as is, or a LangFlow export converted first.

Whatever came in, what comes out (and is later hashed and stored) is a flowfleet document.

    document = load_document(raw)            # FlowValidationError / LangflowImportError on bad input
    document = load_document(raw, name="support_qa")   # a LangFlow export takes this flow name
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cluster.errors import FlowValidationError, Problem
from cluster.flow import validation
from cluster.flow.hashing import canonical_bytes
from cluster.langflow import convert, is_langflow_export

# LangFlow exports carry every component's source code, so they are much larger than the flow they
# describe; they may be this large before conversion. The converted document meets the normal limits.
LANGFLOW_MAX_BYTES = 16 * 1024 * 1024


def load_document(
    raw: bytes | str, limits: validation.Limits | None = None, *, name: str | None = None
) -> Any:
    """Parse `raw` under the limits; convert a LangFlow export (named `name`, or after its title)."""
    limits = limits or validation.DEFAULT_LIMITS
    try:
        document = validation.parse_document(raw, limits)
    except FlowValidationError as e:
        if [p.code for p in e.problems] != ["too_large"] or len(raw) > LANGFLOW_MAX_BYTES:
            raise
        roomy = dataclasses.replace(limits, max_document_bytes=LANGFLOW_MAX_BYTES)
        document = validation.parse_document(raw, roomy)
        if not is_langflow_export(document):
            raise
    if not is_langflow_export(document):
        return document
    converted = convert(document, name=name)
    size = len(canonical_bytes(converted))
    if size > limits.max_document_bytes:
        raise FlowValidationError(
            [
                Problem(
                    "",
                    "too_large",
                    f"the converted LangFlow flow is {size} bytes; the limit is "
                    f"{limits.max_document_bytes} bytes",
                )
            ]
        )
    return converted
