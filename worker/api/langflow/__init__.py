"""LangFlow's v1 run API on a replica: `POST /api/v1/run/{flow}` and `POST /api/v1/webhook/{flow}`.

Code written for LangFlow (its documented HTTP calls, its Python and JS clients) switches to flowfleet by
changing the base URL. Each request is translated onto worker.runs like the native API's: `request`
reads LangFlow's body, `call` admits it as a run and `plan` maps it onto the version that serves,
`results` nests the answer as LangFlow does, `framing` writes streamed runs in LangFlow's bytes,
`errors` answers FastAPI's `{"detail": ...}`, and `routes` / `webhook` are the handlers (`routes.ROUTES`
is what the app mounts). docs/calling-flows.md has the mapping.
"""
