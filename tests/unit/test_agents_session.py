"""Agents with a conversation session (issue 20, item 2 wired into item 1): a run given
``session`` sees the tenant's earlier turns (windowed), appends its task and its answer, and
puts the window report in its ``agent_run`` audit entry. The planner is a scripted chat
capability (a handler) on a real mesh; the summariser another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.agents import action_model, agent
from aios_mesh.capabilities import CapabilitySpec, capability
from aios_mesh.conversations import ConversationStore
from aios_mesh.errors import NotFound
from aios_mesh.generation import ChatInput, TextOutput
from aios_mesh.record import DecisionRecord


class Ask(BaseModel):
    q: str


class Answer(BaseModel):
    a: str


@capability("echo-tool", description="Echo.")
def echo_tool(x: Ask) -> Answer:
    return Answer(a=x.q)


def decide(chat: ChatInput) -> dict[str, object]:
    """Answer at once, saying what earlier conversation it was shown."""
    earlier = [m.content for m in chat.messages[1:-1]]
    return {"action": "final", "arguments": {},
            "answer": f"{chat.messages[-1].content} | earlier: {' / '.join(earlier)}"}


def summarise(chat: ChatInput) -> TextOutput:
    return TextOutput(text=f"{len(chat.messages[-1].content.splitlines())} turns before")


PLANNER = CapabilitySpec(name="chat-planner", input=ChatInput,
                         output=action_model(["echo-tool"]), handler=decide)
SUMMARY = CapabilitySpec(name="summarise-chat", input=ChatInput, output=TextOutput,
                         handler=summarise)


def _mesh(folder: Path, **options: object) -> Mesh:
    helper = agent("helper", instructions="Help.", llm="chat-planner", tools=[echo_tool],
                   **options)  # type: ignore[arg-type]
    return Mesh.local(folder, tenants=["acme", "globex"],
                      capabilities=[helper, PLANNER, SUMMARY, echo_tool])


def _audit(folder: Path) -> list[dict[str, object]]:
    lines = (folder / "audit.jsonl").read_text().splitlines()
    return [json.loads(x)["record"] for x in lines
            if json.loads(x)["record"].get("kind") == "agent_run"]


def test_a_session_carries_the_conversation_across_runs(tmp_path: Path) -> None:
    with _mesh(tmp_path) as mesh:
        store = ConversationStore.for_mesh(mesh)
        sid = store.create("acme").id
        first = mesh.invoke("helper", {"task": "Where is A-17?", "session": sid},
                            tenant="acme")
        second = mesh.invoke("helper", {"task": "And A-18?", "session": sid}, tenant="acme")
        history = store.history(sid, tenant="acme")
        with pytest.raises(NotFound):  # another tenant's session: the run ends, nothing read
            mesh.invoke("helper", {"task": "peek", "session": sid}, tenant="globex")
        store.close()
    assert first.output is not None and second.output is not None
    assert first.output.answer == "Where is A-17? | earlier: "
    assert second.output.answer.startswith("And A-18? | earlier: Where is A-17? / Where is")
    assert [(t.role, t.record_id) for t in history] == [
        ("user", first.record.record_id), ("assistant", first.record.record_id),
        ("user", second.record.record_id), ("assistant", second.record.record_id)]
    window = _audit(tmp_path)[1]["conversation_window"]
    assert isinstance(window, dict) and window["turns_kept"] == 2


def test_a_long_session_is_trimmed_or_summarised_and_recorded(tmp_path: Path) -> None:
    records: list[DecisionRecord] = []
    with _mesh(tmp_path, history_tokens=120, history_summariser="summarise-chat") as mesh:
        mesh.sinks.append(lambda record, _doc: records.append(record))
        store = ConversationStore.for_mesh(mesh)
        sid = store.create("acme").id
        for i in range(10):
            store.append(sid, tenant="acme", role="user", content=f"question {i} " * 4)
        run = mesh.invoke("helper", {"task": "Summarise please", "session": sid},
                          tenant="acme")
        mesh.flush()
        store.close()
    window = _audit(tmp_path)[0]["conversation_window"]
    assert isinstance(window, dict) and window["strategy"] == "summarise"
    assert window["summarised"] and window["tokens"] <= 120
    summary = next(r for r in records if r.capability == "summarise-chat")
    assert summary.record_id == window["summary_record_id"]
    assert summary.parent is not None and summary.parent["run_id"] == run.record.record_id
