"""Output guardrails on a real generation stream: Gemma 3 270M on llama.cpp (in process, the
embedded LLM engine), policies on the embedded Rego engine. A held stream is released as one
masked text chunk plus the usage chunk; a denied one sends nothing. The model's words are
not predictable, so the term to block is taken from its own first answer (temperature 0:
the same prompt gives the same answer on the same engine)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aios_mesh import SLO, CapabilitySpec, Mesh, PolicyDenied
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.generation import ChatInput, Generation, TextOutput
from aios_mesh.pipeline.guard import OUTPUT_BLOCKED, OutputGuard, install_output_guard

pytestmark = pytest.mark.integration

# The obligations come from the call's attributes, so one policy serves every case here.
POLICY = """package guard.llm
import rego.v1
default allow := true
obligations := {"output": {"blocked_terms": [input.attributes.block],
                           "on_blocked": input.attributes.on}} if input.attributes.block
"""

CHAT = CapabilitySpec(name="chat", input=ChatInput, output=TextOutput, model="writer@champion",
                      serving="llm", policy="guard/llm", slo=SLO(timeout_s=120),
                      generate=Generation(max_tokens=24))
PROMPT = {"messages": [{"role": "user", "content": "Describe the sea in one sentence."}]}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guard-llm")
    (root / "policies/guard").mkdir(parents=True)
    (root / "policies/guard/llm.rego").write_text(POLICY)
    return root


@pytest.fixture
async def mesh(state: Path) -> AsyncIterator[Mesh]:
    registry = MemoryRegistry()
    ref = await registry.register("writer", "llamacpp://gemma3-270m")
    await registry.set_alias("writer", "champion", ref.version)
    config = config_from_mapping({
        "state_dir": str(state / "state"), "tenants": {"acme": {}},
        "backends": {"policy": f"rego:///{state}/policies",
                     "serving_named": {"llm": "llamacpp://gemma3-270m?n_ctx=512"}},
        "retry": {"backoff_s": 0.0}}, base_dir=state)
    built = Mesh(config, capabilities=[CHAT], adapters={"registry": registry})
    install_output_guard(built.pipeline, OutputGuard(built.review_queue))
    yield built
    await built.aclose()


async def _stream(mesh: Mesh, **attributes: Any) -> list[dict[str, Any]]:
    return [c async for c in mesh.stream("chat", PROMPT, tenant="acme", caller="t",
                                         attributes=attributes)]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["text"] for c in chunks if isinstance(c.get("text"), str))


async def test_a_generation_stream_is_held_masked_or_blocked(mesh: Mesh) -> None:
    free = await _stream(mesh)  # no output obligation: streamed token by token
    answer = _text(free)
    words = re.findall(r"[A-Za-z]{4,}", answer)
    assert len([c for c in free if "text" in c]) > 1 and words, answer
    term = words[0]

    masked = await _stream(mesh, block=term, on="mask")
    text_chunks = [c for c in masked if "text" in c]
    assert len(text_chunks) == 1  # held, then released as one masked chunk
    assert "[BLOCKED_TERM]" in text_chunks[0]["text"]
    assert re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text_chunks[0]["text"],
                     re.IGNORECASE) is None
    assert any("usage" in c for c in masked)  # the usage chunk still comes

    got: list[dict[str, Any]] = []

    async def consume() -> None:
        async for chunk in mesh.stream("chat", PROMPT, tenant="acme", caller="t",
                                       attributes={"block": term, "on": "deny"}):
            got.append(chunk)

    with pytest.raises(PolicyDenied) as err:
        await consume()
    assert got == [] and err.value.reason_code == OUTPUT_BLOCKED
