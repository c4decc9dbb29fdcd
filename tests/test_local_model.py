"""The embedded llama.cpp model, for real: structure and usage, not wording.

Needs ``dlg models pull`` to have run (the README's test command does it); select or
skip these with ``-m local_model`` / ``-m 'not local_model'``.
"""

from __future__ import annotations

import anyio
import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

pytestmark = pytest.mark.local_model


@pytest.fixture(autouse=True)
def _needs_the_model():
    problem = dlg.Orchestrator().pool.problem("local")
    if problem:
        pytest.fail(f"the local model is not ready: {problem}")


# a fixed seed makes llama.cpp's sampling repeatable; the assertions still check
# structure and usage only, never wording
SHORT_DEBATE = {"name": "short-debate", "extends": "debate",
                "settings": {"max_tokens": 40, "seed": 7}}


# a six-turn debate on the real model (about 24 s on a busy 2-core machine):
# test_cli_runs_a_builtin_mode_with_no_model_named is the quick case by default
@pytest.mark.long
async def test_builtin_mode_runs_offline_on_the_default_local_model(tmp_path):
    import json

    path = tmp_path / "short.json"
    path.write_text(json.dumps(SHORT_DEBATE))
    d = await dlg.run(path, topic="Should cities ban cars?")
    assert d.status == "completed"
    assert {t.model for t in d.turns} == {"local"}
    assert {t.status for t in d.turns} == {"completed"}
    for t in d.turns:
        assert not t.usage.estimated and t.usage.prompt > 0 and t.usage.completion <= 40
        assert t.cost_usd == 0.0
    assert sum(len(t.response.strip()) for t in d.turns) > 0  # real text was written
    assert sum(t.usage.completion for t in d.turns) > 0


async def test_parallel_turns_share_one_loaded_model():
    from dlg.plugins import local_model

    mode = {"name": "trio", "structure": "parallel", "settings": {"max_tokens": 16, "seed": 7},
            "turns": [{"id": f"t{i}", "role": "R", "prompt": f"Name a colour ({i})."}
                      for i in range(3)]}
    d = await dlg.run(mode, model="local")
    assert d.status == "completed"
    assert len({k[0] for k in local_model._servers}) == 1


async def test_the_event_loop_is_never_blocked():
    """The seed's SC2.1: a local model call runs off the event loop.

    Counted, not timed (the machine may be busy): a loop blocked by the call would tick
    almost never while it runs; a free one ticks every 10 ms or so.
    """
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    mode = {"name": "one", "settings": {"max_tokens": 48, "seed": 7},
            "turns": [{"id": "a", "role": "A", "prompt": "Describe the sea."}]}
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        d = await dlg.run(mode, model="local", store=None)
        tg.cancel_scope.cancel()
    latency = d.turns[0].latency_seconds
    assert d.status == "completed" and latency > 0.1
    assert ticks >= latency / 0.01 * 0.3, (ticks, latency)


async def test_streaming_from_the_local_model():
    model = dlg.chat_model("local")
    pieces = [p async for p in model.stream("Count to five.", max_tokens=24, seed=7)]
    assert len(pieces) >= 2 and model.last is not None
    assert model.last.text == "".join(pieces) and not model.last.usage.estimated
    result = await model.chat("Say hello.", max_tokens=12, seed=7)
    assert result.model == "local" and not result.usage.estimated


def test_cli_runs_a_builtin_mode_with_no_model_named(tmp_path):
    import json

    path = tmp_path / "short.json"
    path.write_text(json.dumps({**SHORT_DEBATE, "settings": {"max_tokens": 24}}))
    result = CliRunner().invoke(cli, ["run", str(path), "--topic", "Tea or coffee?",
                                      "--no-stream"], catch_exceptions=False)
    assert result.exit_code == 0
    # dlg's own headings, one per turn (the model may write headings of its own)
    roles = ["Proposition", "Opposition", "Defense", "Rebuttal", "Synthesis", "Verdict"]
    for i, role in enumerate(roles, 1):
        assert f"\n## {i}. {role} (" in result.stdout, role
    assert "· local\n" in result.stderr


@pytest.mark.long  # about 18 s on 2 cores: .ci/run runs it
async def test_the_dynamic_mode_spawns_sub_dialogues_on_the_local_model():
    """The embedded model holds its structured answer to the schema (a llama.cpp grammar),
    so the decomposition parses and its parts run as sub-dialogues."""
    mode = {"name": "short-dynamic", "extends": "dynamic",
            "settings": {"max_tokens": 120, "seed": 7},
            "overrides": {"decompose": {"settings": {"max_tokens": 200}}}}
    d = await dlg.run(mode, topic="Why is the sky blue?", store=None)
    assert d.status == "completed", d.error
    assert 2 <= len(d.subdialogues) <= 4
    assert all(c.status == "completed" and c.depth == 1 for c in d.subdialogues)
    assert all(c.turn("explore").response.strip() for c in d.subdialogues)
    assert d.turn("synthesis").status == "completed"


def test_models_pull_times_a_short_answer_here_and_the_registry_says_so(tmp_path,
                                                                        monkeypatch):
    """The registry said 1.0 s for `local`, about 5 s a turn on 2 cores: `dlg models
    pull` times one short answer on this machine and the registry reports that figure."""
    import json
    import re

    from dlg.plugins.local import model_path

    real = model_path("", {})
    (tmp_path / real.name).symlink_to(real)  # pulled already: nothing is downloaded
    monkeypatch.setenv("DLG_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("DLG_LOCAL_MODEL", raising=False)
    pulled = CliRunner().invoke(cli, ["models", "pull", "local"], catch_exceptions=False)
    assert pulled.exit_code == 0
    said = re.fullmatch(
        r"timing one short answer on this machine \.\.\.\n"
        r"local: a short answer \((\d+) tokens\) took ([\d.]+) s here on \d+ of \d+ CPUs; "
        r"the registry's latency for local is this figure\n", pulled.stderr)
    assert said, pulled.stderr
    figure = json.loads((tmp_path / "local-latency.json").read_text())
    assert figure["seconds"] == float(said[2]) > 0 and figure["tokens"] == int(said[1]) > 0
    dlg.plugin_manager.reset_plugin_manager(None)
    shown = CliRunner().invoke(cli, ["models", "show", "local"], catch_exceptions=False)
    assert f"typical latency (s): {figure['seconds']}\n" in shown.output
