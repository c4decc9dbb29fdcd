"""The kernel: ordering, parallelism, context, conditions, failures, timeouts, events."""

from __future__ import annotations

import json
import time

import anyio

import dlg
from dlg import hookimpl

from .conftest import prompt_text

SEQ = {
    "name": "seq",
    "inputs": {"topic": {"required": True}},
    "participants": {"a": None, "b": None},
    "turns": [
        {"id": "first", "role": "First", "participant": "a", "prompt": "Start on {{ topic }}"},
        {"id": "second", "role": "Second", "participant": "b",
         "prompt": "Answer: {{ turns.first }}"},
        {"id": "third", "role": "Third", "participant": "a", "context_from": ["first"],
         "prompt": "Third"},
    ],
}


async def test_sequential_turns_run_in_order_and_read_context(recorder):
    model = recorder(["one", "two", "three"])
    d = await dlg.run(SEQ, topic="tides", model=model)
    assert d.status == "completed"
    assert [t.response for t in d.turns] == ["one", "two", "three"]
    prompts = [prompt_text(call[0]) for call in model.calls]
    assert prompts[0] == "Start on tides"
    assert prompts[1] == "Answer: one"  # the template read turn 1 itself: no transcript added
    assert prompts[2] == "### First (a)\none\n\nThird"  # context_from given as a transcript
    assert all(t.started_at <= t.ended_at for t in d.turns)
    assert d.turns[0].ended_at <= d.turns[1].started_at


async def test_record_fields(recorder):
    d = await dlg.run(SEQ, topic="tides", model="echo")
    t = d.turns[0]
    assert (t.id, t.index, t.role, t.participant, t.model, t.status) == (
        "first", 1, "First", "a", "echo", "completed")
    assert t.usage.prompt > 0 and t.usage.completion > 0
    assert t.usage.total == t.usage.prompt + t.usage.completion
    assert t.tokens is t.usage
    assert t.latency_seconds >= 0
    assert d.mode == "seq" and len(d.mode_hash) == 64 and d.inputs == {"topic": "tides"}
    assert d.total_tokens == sum(t.usage.total for t in d.turns)
    data = json.loads(d.export("json"))
    assert data["turns"][0]["usage"]["total"] == t.usage.total
    assert dlg.Dialogue.from_dict(data).to_dict() == data


async def test_parallel_turns_start_together():
    """The seed's SC2.2 and V2: three parallel turns take about one call's time."""
    mode = {"name": "par", "structure": "parallel",
            "participants": {"grok": None, "claude": None, "gpt4": None},
            "turns": [{"id": f"analysis_{i}", "role": f"analysis_{i}", "participant": p,
                       "prompt": "analyse"} for i, p in
                      enumerate(["grok", "claude", "gpt4"], 1)]}
    started = time.perf_counter()
    d = await dlg.run(mode, model="echo?latency=0.5")
    duration = time.perf_counter() - started
    assert len(d.turns) == 3 and d.status == "completed"
    assert duration < 1.5 * 0.5 + 0.5  # much closer to one call (0.5s) than three (1.5s)
    starts = [t.started_at for t in d.turns]
    assert max(starts) - min(starts) < 1.0


async def test_mixed_phases_wait_for_the_parallel_phase(recorder):
    d = await dlg.run("panel", topic="AI in schools", model="echo?latency=0.05")
    experts, synthesis = d.turns[:3], d.turns[3]
    assert all(t.ended_at <= synthesis.started_at for t in experts)
    assert "Technical view" in synthesis.prompt and "Economic view" in synthesis.prompt


async def test_when_false_skips_turn_and_later_turns_see_it_skipped(recorder):
    mode = {"name": "w", "inputs": {"go": {"type": "boolean", "default": False}},
            "turns": [
                {"id": "maybe", "role": "M", "prompt": "m", "when": "go"},
                {"id": "after", "role": "A",
                 "prompt": "{% if turns.maybe %}saw{% else %}skipped{% endif %}"}]}
    model = recorder(["x", "y"])
    d = await dlg.run(mode, model=model)
    assert [t.status for t in d.turns] == ["skipped", "completed"]
    assert prompt_text(model.calls[0][0]) == "skipped"
    d = await dlg.run(mode, go="yes", model=recorder(["x", "y"]))
    assert [t.status for t in d.turns] == ["completed", "completed"]


async def test_failing_turn_fails_dialogue_and_stops(monkeypatch):
    mode = {"name": "f", "participants": {"bad": "echo?fail=always", "good": "echo"},
            "turns": [{"id": "a", "role": "A", "participant": "good", "prompt": "a"},
                      {"id": "b", "role": "B", "participant": "bad", "prompt": "b"},
                      {"id": "c", "role": "C", "participant": "good", "prompt": "c"}]}
    d = await dlg.run(mode)
    assert [t.status for t in d.turns] == ["completed", "failed", "pending"]
    assert d.status == "failed"
    assert d.turns[1].error == "echo?fail=always: RuntimeError: echo model asked to fail"
    assert d.error == "turn 'b' failed: echo?fail=always: RuntimeError: echo model asked to fail"


async def test_on_error_continue_keeps_going():
    mode = {"name": "f", "participants": {"bad": "echo?fail=always", "good": "echo"},
            "turns": [{"id": "b", "role": "B", "participant": "bad", "prompt": "b",
                       "on_error": "continue"},
                      {"id": "c", "role": "C", "participant": "good", "prompt": "c"}]}
    d = await dlg.run(mode)
    assert [t.status for t in d.turns] == ["failed", "completed"]
    assert d.status == "completed"


async def test_parallel_sibling_failure_lets_siblings_finish():
    mode = {"name": "p", "structure": "mixed",
            "participants": {"bad": "echo?fail=always", "good": "echo?latency=0.05"},
            "phases": [
                {"id": "fan", "structure": "parallel", "turns": [
                    {"id": "x", "role": "X", "participant": "bad", "prompt": "x"},
                    {"id": "y", "role": "Y", "participant": "good", "prompt": "y"}]},
                {"id": "end", "turns": [{"id": "z", "role": "Z", "participant": "good",
                                         "prompt": "z"}]}]}
    d = await dlg.run(mode)
    assert [t.status for t in d.turns] == ["failed", "completed", "pending"]


async def test_turn_timeout_is_retried_then_fails():
    mode = {"name": "t", "turns": [{"id": "slow", "role": "S", "prompt": "s", "timeout": 0.05}]}
    orchestrator = dlg.Orchestrator(model="echo?latency=5",
                                    retry=dlg.RetryPolicy(base_delay=0.01))
    d = await orchestrator.run(mode)
    assert d.status == "failed"
    assert d.turns[0].error == (
        "echo?latency=5: timed out after 0.05s (after 3 attempts on echo?latency=5)")
    assert [a["transient"] for a in d.turns[0].attempts] == [True, True, True]


async def test_cancellation_marks_dialogue_and_turn_cancelled():
    seen = []

    class Observer:
        def turn_finished(self, dialogue, turn):
            seen.append(("turn", turn.id, turn.status))

        async def dialogue_finished(self, dialogue):
            await anyio.sleep(0)  # async observers are awaited, even when cancelled
            seen.append(("dialogue", dialogue.status))

    mode = {"name": "c", "turns": [{"id": "slow", "role": "S", "prompt": "s"}]}
    orchestrator = dlg.Orchestrator(model="echo?latency=5", observers=[Observer()])
    with anyio.move_on_after(0.1):
        await orchestrator.run(mode)
    assert seen == [("turn", "slow", "cancelled"), ("dialogue", "cancelled")]


async def test_lifecycle_hooks_reach_plugins(pm):
    events = []

    class Plugin:
        @hookimpl
        def dialogue_started(self, dialogue):
            events.append(("dialogue_started", dialogue.status))

        @hookimpl
        def turn_started(self, dialogue, turn):
            events.append(("turn_started", turn.id, turn.status, turn.prompt))

        @hookimpl
        async def turn_finished(self, dialogue, turn):
            await anyio.sleep(0)
            events.append(("turn_finished", turn.id, turn.status))

        @hookimpl
        def dialogue_finished(self, dialogue):
            events.append(("dialogue_finished", dialogue.status))

    pm.register(Plugin())
    mode = {"name": "h", "turns": [{"id": "a", "role": "A", "prompt": "hello"}]}
    await dlg.run(mode, model="echo")
    assert events == [
        ("dialogue_started", "running"),
        ("turn_started", "a", "running", "hello"),
        ("turn_finished", "a", "completed"),
        ("dialogue_finished", "completed"),
    ]


async def test_settings_layer_mode_participant_turn(recorder):
    mode = {"name": "s", "settings": {"temperature": 0.1, "max_tokens": 10},
            "participants": {"p": {"settings": {"temperature": 0.5, "extra": {"top_k": 3}}}},
            "turns": [{"id": "a", "role": "A", "participant": "p", "prompt": "x",
                       "settings": {"max_tokens": 20}}]}
    model = recorder(["ok"])
    await dlg.run(mode, model=model)
    assert model.calls[0][1] == {"temperature": 0.5, "max_tokens": 20, "top_k": 3}


async def test_the_system_text_is_a_system_message_and_a_turn_s_instruction_opens_its_prompt(
        recorder):
    """A turn's instruction follows the earlier turns it reads, so the system text and
    the transcript are the same bytes in every turn (a provider's prompt cache reads
    them); before, the instruction was appended to the system text."""
    mode = {"name": "s", "inputs": {"topic": {}}, "system": "About {{ topic }}.",
            "turns": [{"id": "a", "role": "A", "instruction": "You are {{ role }}.",
                       "prompt": "go"},
                      {"id": "b", "role": "B", "instruction": "You are {{ role }}.",
                       "prompt": "answer"}]}
    model = recorder(["ok", "fine"])
    d = await dlg.run(mode, topic="bees", model=model)
    first, second = model.calls[0][0], model.calls[1][0]
    assert [m.type for m in first] == ["system", "human"]
    assert first[0].content == second[0].content == d.turns[1].system == "About bees."
    assert first[1].content == "You are A.\n\ngo"
    assert second[1].content == "### A\nok\n\nYou are B.\n\nanswer"  # the transcript first


async def test_an_instruction_alone_is_the_prompt_and_no_system_text_is_none(recorder):
    mode = {"name": "s", "turns": [{"id": "a", "role": "A", "instruction": "Be brief.",
                                    "prompt": "{{ '' }}"}]}
    model = recorder(["ok"])
    d = await dlg.run(mode, model=model)
    assert model.calls[0][0] == "Be brief."  # the prompt alone, no system message
    assert d.turns[0].system is None and d.turns[0].prompt == "Be brief."


async def test_previous_context_after_parallel_phase_reads_all_branches():
    mode = dlg.load_mode({"name": "p", "structure": "mixed", "phases": [
        {"id": "fan", "structure": "parallel", "turns": [
            {"id": "x", "role": "X", "prompt": "x"}, {"id": "y", "role": "Y", "prompt": "y"}]},
        {"id": "end", "turns": [{"id": "z", "role": "Z", "prompt": "z",
                                 "context_from": "previous"}]}]})
    assert mode.turn("z").context_from == ("x", "y")


async def test_turn_positions_in_templates_and_context(recorder):
    mode = {"name": "n", "turns": [
        {"id": "a", "role": "A", "prompt": "a"},
        {"id": "b", "role": "B", "prompt": "b"},
        {"id": "c", "role": "C", "context_from": [1, 2],
         "prompt": "{{ turns[1] }}+{{ turns[2] }}"}]}
    model = recorder(["one", "two", "three"])
    await dlg.run(mode, model=model)
    assert prompt_text(model.calls[2][0]) == "one+two"


async def test_one_dialogue_many_concurrent_runs_share_a_mode():
    mode = dlg.load_mode("debate")
    async with anyio.create_task_group() as tg:
        results = []

        async def one(i):
            results.append(await dlg.run(mode, topic=f"t{i}", model="echo"))

        for i in range(20):
            tg.start_soon(one, i)
    assert len({d.id for d in results}) == 20
    assert all(d.status == "completed" for d in results)


async def test_turn_chunks_stream_to_listeners():
    pieces = []

    class Listener:
        def turn_chunk(self, dialogue, turn, text):
            pieces.append((turn.id, text))

    mode = {"name": "s", "turns": [{"id": "a", "role": "A", "prompt": "hello world"},
                                   {"id": "b", "role": "B", "prompt": "bye"}]}
    d = await dlg.Orchestrator(model="echo", observers=[Listener()]).run(mode)
    assert d.status == "completed"
    # echo cannot stream, so each answer arrives as one piece
    assert pieces == [("a", d.turns[0].response), ("b", d.turns[1].response)]
    assert d.turns[0].usage.completion > 0


async def test_streaming_model_delivers_pieces(recorder):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    model = GenericFakeChatModel(messages=iter([AIMessage(content="one two three")]))
    pieces = []

    class Listener:
        async def turn_chunk(self, dialogue, turn, text):
            pieces.append(text)

    mode = {"name": "s", "turns": [{"id": "a", "role": "A", "prompt": "go"}]}
    d = await dlg.Orchestrator(model=model, observers=[Listener()]).run(mode)
    assert len(pieces) > 1 and "".join(pieces) == "one two three" == d.turns[0].response
    assert d.turns[0].usage.estimated  # the fake model reports no usage: dlg counted
