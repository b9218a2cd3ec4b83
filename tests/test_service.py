"""control.service without HTTP: the checks between a stored version and the fleet hearing about it."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from cluster.components.registry import Registry, builtin_components
from cluster.errors import FlowValidationError
from cluster.store.keys import Keys
from cluster.store.release import Release
from cluster.store.store import Store
from control.rollout.cutover import CutoverRequest, DirectCutover
from control.service import ControlService
from tests.control_support import flow_doc

FLOW = "support_qa"


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


async def test_activation_compiles_the_stored_version_again(store: Store) -> None:
    """A version valid when published but not loadable now (a component was removed) is refused."""
    publisher = ControlService(store)
    outcome = await publisher.publish(FLOW, json.dumps(flow_doc()).encode(), actor="ci")
    without_llm = Registry(c for c in builtin_components() if c.type_name != "LLM")
    activator = ControlService(store, registry=without_llm)
    with pytest.raises(FlowValidationError) as err:
        await activator.activate(FLOW, outcome.hash, actor="ci")
    assert any("LLM" in p.message for p in err.value.problems)
    assert await store.get_release(FLOW) is None


async def test_a_custom_cutover_receives_the_verified_request(store: Store) -> None:
    """The seam staged rollouts use: the service hands over only after verifying and compiling."""
    seen: list[CutoverRequest] = []
    direct = DirectCutover(store)

    async def recording(request: CutoverRequest) -> Release:
        seen.append(request)
        return await direct(request)

    service = ControlService(store, cutover=recording)
    outcome = await service.publish(
        FLOW, json.dumps(flow_doc()).encode(), actor="ci", message="m", activate=True
    )
    assert outcome.release is not None and outcome.release.generation == 1
    # With the verified bytes, which a two-phase prepare event carries when the version is small.
    data = await store.get_blob(FLOW, outcome.hash)
    assert seen == [CutoverRequest(FLOW, outcome.hash, "ci", "m", "activate", None, data=data)]
