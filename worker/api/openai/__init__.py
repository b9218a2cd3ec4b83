"""The OpenAI-compatible API: a flow is a model, so the `openai` SDKs (and LangChain, chat UIs) call flows
by changing only their base URL to a replica's `/v1` (docs/calling-flows.md, "The OpenAI API").

    POST /v1/chat/completions   chat.py (+ chat_stream.py)        the caller holds the conversation
    POST /v1/responses          responses.py (+ responses_stream.py)   conversations kept in Redis
    GET  /v1/models[/{model}]   models.py

Each request becomes a worker.runs `RunCall` (run.py); what a request may say is params.py and
messages.py, how a flow's inputs and outputs map is mapping.py, and every error is OpenAI-shaped
(errors.py).
"""

from __future__ import annotations

from starlette.routing import Route

from worker.api.openai.chat import chat_completions
from worker.api.openai.errors import OpenAIEndpoint, ScopeEndpoint
from worker.api.openai.models import list_models, retrieve_model
from worker.api.openai.responses import create_response

ROUTES = (
    Route("/v1/chat/completions", ScopeEndpoint(chat_completions), methods=["POST"]),
    Route("/v1/responses", OpenAIEndpoint(create_response), methods=["POST"]),
    Route("/v1/models", OpenAIEndpoint(list_models), methods=["GET"]),
    Route("/v1/models/{model:path}", OpenAIEndpoint(retrieve_model), methods=["GET"]),
)
