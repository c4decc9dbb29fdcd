"""A dialogue leaves no reference cycles behind, whatever its turns meet: what it
allocates is freed by reference counting, so the garbage collector (whose full
collections walk every live object, a cost that grows with the dialogues in flight)
has nothing of it to find."""

from __future__ import annotations

import gc
import os
import types

import anyio
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import dlg
import dlg.plugins

MODE = {"name": "m", "participants": {"a": {"fallbacks": ["echo"]}},
        "turns": [{"id": f"t{i}", "role": "R", "participant": "a", "prompt": f"p{i}",
                   "context_from": "previous"} for i in range(4)]}


class Flaky(FakeListChatModel):
    """Fails every other call with a transient error (a retry answers)."""

    calls: int = 0

    async def ainvoke(self, messages, *args, **kwargs):
        self.calls += 1
        if self.calls % 2:
            raise ConnectionError("dropped")
        return await super().ainvoke(messages, *args, **kwargs)


class Broken(FakeListChatModel):
    """Fails every call with an error a retry cannot fix (the fallback answers)."""

    async def ainvoke(self, messages, *args, **kwargs):
        raise ValueError("bad request")


class Slow(FakeListChatModel):
    async def ainvoke(self, messages, *args, **kwargs):
        await anyio.sleep(5)


_DLG = tuple(os.path.dirname(m.__file__) for m in (dlg, dlg.plugins))  # core, plugins


def _ours(thing) -> bool:
    """Whether ``thing`` is dlg's: an object of a dlg class, or a frame of dlg's code
    (``gc`` sees the whole process: a thread an earlier test left may make garbage of
    its own meanwhile)."""
    if isinstance(thing, types.FrameType):
        return thing.f_code.co_filename.startswith(_DLG)
    return type(thing).__module__.startswith("dlg.")


def _garbage(run, mode) -> tuple[list[str], dlg.Dialogue]:
    """Type names of dlg's objects that ``gc`` finds unreachable after one dialogue
    (``await run(mode)``; run twice before, so caches are filled), and the dialogue."""
    from dlg.models.resilience import cooldowns

    async def main():
        for _ in range(2):
            await run(mode)
        cooldowns.reset()  # a model that kept failing would be skipped, not tried
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            dialogue = await run(mode)
            gc.collect()
            return sorted({type(x).__name__ for x in gc.garbage if _ours(x)}), dialogue
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            gc.enable()

    return anyio.run(main)


@pytest.mark.parametrize("case", ["answers", "saved", "retried", "fallback", "timed out",
                                  "failed"])
def test_a_dialogue_leaves_no_reference_cycles(case, tmp_path):
    mode = dlg.load_mode(MODE)
    store = None
    retry = dlg.RetryPolicy(base_delay=0.0)
    timeout = None
    model = {"answers": FakeListChatModel(responses=["ok"]),
             "saved": FakeListChatModel(responses=["ok"]),
             "retried": Flaky(responses=["ok"]),
             "fallback": Broken(responses=["ok"]),
             "timed out": Slow(responses=["ok"]),
             "failed": Broken(responses=["ok"])}[case]
    if case == "saved":
        from dlg.plugins.sqlite_store import SqliteStore

        store = SqliteStore(tmp_path)
    if case == "timed out":
        timeout = 0.01
        retry = dlg.RetryPolicy(attempts=2, base_delay=0.0)
    if case == "failed":
        mode = dlg.load_mode({**MODE, "participants": {"a": None}})
    orchestrator = dlg.Orchestrator(models={"a": model}, store=store, retry=retry,
                                    timeout=timeout)
    garbage, dialogue = _garbage(orchestrator.run, mode)
    assert garbage == []
    first = dialogue.turns[0]
    assert dialogue.status == ("failed" if case == "failed" else "completed")
    if case in ("fallback", "timed out"):
        assert first.model == "echo"
    assert bool(first.attempts) == (case in ("retried", "fallback", "timed out", "failed"))


@pytest.mark.parametrize("name", ["loop", "panel", "detective-deep", "debate"])
def test_the_built_in_modes_leave_no_reference_cycles(name, tmp_path):
    # a refinement loop that stops early, parallel phases, judges, a summary
    from dlg.plugins.sqlite_store import SqliteStore

    mode = dlg.load_mode(name)
    inputs = {k: "x" for k, spec in mode.inputs.items() if spec.required}
    orchestrator = dlg.Orchestrator(model="echo", store=SqliteStore(tmp_path))

    garbage, dialogue = _garbage(lambda m: orchestrator.run(m, **inputs), mode)
    assert garbage == [] and dialogue.status in ("completed", "converged")
