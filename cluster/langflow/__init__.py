"""Import flows designed in LangFlow: detect an export by its shape and convert it to a flowfleet flow.

The control API and `flowfleet publish` call these two functions; the stored, hashed version is always
the converted flowfleet document::

    from cluster.langflow import convert, is_langflow_export

    if is_langflow_export(doc):
        doc = convert(doc)  # raises LangflowImportError (422, code "unsupported_langflow")

See docs/langflow.md for the mapping and its limits.
"""

from cluster.langflow.convert import Conversion, convert, flow_name, translate
from cluster.langflow.errors import LangflowImportError, UnsupportedNode
from cluster.langflow.export import is_langflow_export
from cluster.langflow.nodes import DEFAULT_MODEL

__all__ = [
    "DEFAULT_MODEL",
    "Conversion",
    "LangflowImportError",
    "UnsupportedNode",
    "convert",
    "flow_name",
    "is_langflow_export",
    "translate",
]
