"""The request-path baseline: a bare Starlette endpoint that does the 3-node flow's three steps directly
(the same PromptTemplate, LLM(echo) and ChatOutput component instances awaited one after another), served
with exactly the replicas' uvicorn settings, logging and SO_REUSEPORT socket (worker/serve.py).

    python -m bench.bare_app --port 8000     # POST /v1/flows/{name}/run, GET /healthz
"""

from __future__ import annotations

import argparse
import logging.config
import time
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.harness import qa_doc
from cluster.components.base import BuildContext, RunContext
from cluster.components.registry import default_registry
from cluster.http import JSONResponse
from cluster.logfmt import logging_config
from worker.serve import reuse_port_socket, uvicorn_config


def create_app(document: dict[str, Any] | None = None) -> Starlette:
    document = document or qa_doc("a")
    registry = default_registry()
    build = BuildContext(flow_name=document["name"])
    instances = []
    for node in document["nodes"]:
        cls = registry.get(node["type"])
        assert cls is not None
        instances.append(cls(node["id"], node.get("params", {}), build))
    prompt, llm, out = instances

    async def run(request: Request) -> Response:
        body = orjson.loads(await request.body())
        inputs = body.get("inputs", {})
        ctx = RunContext(inputs=inputs)
        started = time.monotonic()
        text = (await prompt.run({"input": inputs["input"]}, ctx))["text"]
        reply = (await llm.run({"prompt": text}, ctx))["text"]
        answer = (await out.run({"message": reply}, ctx))["message"]
        payload = {
            "outputs": {"answer": answer},
            "flow": request.path_params["name"],
            "version": "bare",
            "generation": 0,
            "duration_ms": (time.monotonic() - started) * 1000,
        }
        return JSONResponse(payload)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/v1/flows/{name}/run", run, methods=["POST"]), Route("/healthz", healthz)]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bare Starlette baseline for the request-path benchmark")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.config.dictConfig(logging_config("INFO"))
    config = uvicorn_config(create_app(), args.host, args.port, grace_s=30.0)
    uvicorn.Server(config).run(sockets=[reuse_port_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
