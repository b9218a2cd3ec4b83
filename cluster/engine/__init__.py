"""The engine: compile a valid flow once (components built, schedule precomputed), run it many times,
and run its examples as dry runs. Never imports the store or Redis.

    from cluster.engine import compile_flow
    compiled = compile_flow(document)
    result = await compiled.run({"input": "hi"}, timeout=30)
"""

from cluster.engine.compiler import CompiledFlow, RunResult, compile_analysis, compile_flow
from cluster.engine.examples import run_examples
from cluster.flow.analysis import needed_secrets, needed_services, warm_up

__all__ = [
    "CompiledFlow",
    "RunResult",
    "compile_analysis",
    "compile_flow",
    "needed_secrets",
    "needed_services",
    "run_examples",
    "warm_up",
]
