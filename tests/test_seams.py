"""The plugin seams: pluggy's calling convention, plugin failures, decisions, commands,
and one plugin manager passed explicitly."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

import dlg
from dlg import Decision, PluginError, hookimpl
from dlg.cli import cli
from dlg.plugin_manager import build_plugin_manager

TWO_TURNS = {
    "name": "two", "inputs": {"topic": {}},
    "turns": [{"id": "a", "role": "A", "prompt": "{{ topic }} a"},
              {"id": "b", "role": "B", "prompt": "{{ topic }} b"}],
}
PARALLEL = {
    "name": "par", "structure": "parallel", "inputs": {"topic": {}},
    "turns": [{"id": "a", "role": "A", "prompt": "a"}, {"id": "b", "role": "B", "prompt": "b"}],
}


def test_an_implementation_may_take_fewer_arguments(pm):
    seen = []

    class Plugin:
        @hookimpl
        def turn_finished(self, turn):
            seen.append(turn.id)

        @hookimpl
        def dialogue_started(self):
            seen.append("start")

    pm.register(Plugin(), name="short")
    d = dlg.run_sync(TWO_TURNS, topic="x", model="echo", store=None)
    assert d.status == "completed"
    assert seen == ["start", "a", "b"]


def test_an_observer_may_take_fewer_arguments(pm):
    seen = []

    class Observer:
        def turn_finished(self, turn):
            seen.append(turn.id)

    dlg.run_sync(TWO_TURNS, topic="x", model="echo", store=None, observers=[Observer()])
    assert seen == ["a", "b"]


@pytest.mark.parametrize("mode", [TWO_TURNS, PARALLEL], ids=["sequential", "parallel"])
def test_a_failing_hook_is_a_plugin_error_naming_the_plugin(pm, mode):
    class Plugin:
        @hookimpl
        def turn_finished(self, turn):
            raise ValueError("boom")

    pm.register(Plugin(), name="broken-observer")
    with pytest.raises(PluginError, match=r"^plugin 'broken-observer' failed in "
                                          r"turn_finished: ValueError: boom$"):
        dlg.run_sync(mode, topic="x", model="echo", store=None)


def test_a_failing_hook_still_lets_the_store_save_and_the_cli_shows_no_traceback(pm):
    class Plugin:
        @hookimpl
        async def turn_finished(self, turn):
            raise RuntimeError("disk on fire")

    pm.register(Plugin(), name="async-broken")
    result = CliRunner().invoke(cli, ["run", "debate", "--topic", "x", "--model", "echo",
                                      "--quiet"])
    assert result.exit_code == 1
    assert "Error: plugin 'async-broken' failed in turn_finished: RuntimeError: disk on " \
           "fire" in result.output
    assert "Traceback" not in result.output
    [saved] = dlg.list_dialogues()
    assert saved["status"] == "failed" and saved["turns_completed"] == 1


class Steer:
    def __init__(self, decide):
        self.decide = decide

    @hookimpl
    def before_turn(self, dialogue, turn, model):
        return self.decide(dialogue, turn, model)


def test_before_turn_can_skip_a_turn(pm):
    pm.register(Steer(lambda d, t, m: Decision.skip("not needed") if t.id == "a" else None),
                name="skipper")
    d = dlg.run_sync(TWO_TURNS, topic="x", model="echo", store=None)
    assert [t.status for t in d.turns] == ["skipped", "completed"]
    assert d.turns[0].metadata == {"skipped_by": "plugin 'skipper'", "reason": "not needed"}
    assert d.status == "completed"


def test_before_turn_sees_the_rendered_prompt_and_the_routed_model(pm):
    seen = []
    pm.register(Steer(lambda d, t, m: seen.append((t.id, t.prompt, m))), name="peek")
    dlg.run_sync(TWO_TURNS, topic="bees", model="echo", store=None)
    assert seen == [("a", "bees a", "echo"), ("b", "### A\necho: bees a\n\nbees b", "echo")]


def test_hook_before_turn(pm):
    pm.register(Steer(lambda d, t, m: Decision.run(model="echo?words=2") if t.id == "b"
                      else None), name="router")
    d = dlg.run_sync(TWO_TURNS, topic="x", model="echo", store=None)
    assert [t.model for t in d.turns] == ["echo", "echo?words=2"]
    assert d.turns[1].metadata == {"routed_by": "plugin 'router'"}


def test_before_turn_can_stop_the_dialogue_and_resume_continues_it(pm):
    budget = {"open": False}
    pm.register(Steer(lambda d, t, m: None if budget["open"] or t.id == "a"
                      else Decision.stop("cost_limited", "no budget left")), name="budget")
    d = dlg.run_sync(TWO_TURNS, topic="x", model="echo")
    assert d.status == "cost_limited"
    assert [t.status for t in d.turns] == ["completed", "pending"]
    assert d.metadata["stopped"] == {"status": "cost_limited", "reason": "no budget left",
                                     "by": "plugin 'budget'", "turns_completed": 1}
    assert dlg.load_dialogue(d.id).status == "cost_limited"
    budget["open"] = True
    import anyio

    again = anyio.run(lambda: dlg.resume(d.id))
    assert again.status == "completed"
    assert [t.status for t in again.turns] == ["completed", "completed"]
    assert "stopped" not in again.metadata


def test_a_stop_beats_a_skip_beats_a_model_change():
    answers = [("p1", Decision.run(model="x")), ("p2", Decision.skip("s")),
               ("p3", Decision.stop("halted")), ("p4", None)]
    assert Decision.combine(answers) == (Decision.stop("halted"), "p3")
    assert Decision.combine(answers[:2]) == (Decision.skip("s"), "p2")
    assert Decision.combine(answers[:1]) == (Decision.run(model="x"), "p1")
    assert Decision.combine([]) == (Decision(), None)


def test_a_decision_that_is_not_a_decision_fails_the_turn_clearly(pm):
    pm.register(Steer(lambda d, t, m: "skip"), name="sloppy")
    d = dlg.run_sync(TWO_TURNS, topic="x", model="echo", store=None)
    assert d.status == "failed"
    assert d.turns[0].error == ("plugin 'sloppy' answered before_turn with 'skip': return a "
                                "dlg.Decision or None")


def test_stop_refuses_a_status_dlg_sets_itself():
    with pytest.raises(ValueError, match="'completed' is a status dlg sets itself"):
        Decision.stop("completed")


def test_hook_register_commands(pm):
    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            @click.argument("name")
            def hello(name):
                """Say hello."""
                click.echo(f"hello {name}")

    pm.register(Plugin(), name="greeter")
    runner = CliRunner()
    assert runner.invoke(cli, ["hello", "bees"], catch_exceptions=False).output == "hello bees\n"
    assert "hello" in runner.invoke(cli, ["--help"], catch_exceptions=False).output


def test_a_plugin_cannot_replace_a_builtin_command(pm):
    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("run")
            def run():
                pass

    pm.register(Plugin(), name="hijack")
    result = CliRunner().invoke(cli, ["nonexistent"])
    assert result.exit_code == 1
    assert "Error: plugin 'hijack' replaced the built-in command 'run'" in result.output
    assert cli.commands["run"].callback.__module__ == "dlg.cli.run"


def test_the_orchestrator_uses_its_own_plugin_manager_everywhere(pm, tmp_path):
    """Templates, stores and exporters come from the manager given, not the global one."""
    own = build_plugin_manager(autoload=False)
    saved = {}

    class Store:
        def save(self, record):
            saved[record["id"]] = record

    class Exporter:
        name, extension, description = "ids", "txt", "turn ids"

        def export(self, dialogue):
            return ",".join(t.id for t in dialogue.turns)

    class Plugin:
        @hookimpl
        def prepare_jinja_environment(self, env):
            env.filters["shout"] = lambda s: s.upper()

        @hookimpl
        def register_stores(self, register):
            register("memory", lambda **options: Store())

        @hookimpl
        def register_exporters(self, register):
            register(Exporter())

    own.register(Plugin(), name="private")
    mode = {"name": "p", "inputs": {"topic": {}},
            "turns": [{"id": "a", "role": "A", "prompt": "{{ topic | shout }}"}]}
    orchestrator = dlg.Orchestrator(model="echo", plugin_manager=own, store="memory")
    d = orchestrator.run_sync(mode, topic="bees")
    assert d.turns[0].prompt == "BEES"
    assert saved[d.id]["status"] == "completed"
    assert d.export("ids", pm=own) == "a"
    with pytest.raises(dlg.UnknownExporterError):
        d.export("ids")  # the global manager has no such exporter
