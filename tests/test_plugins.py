"""The plugin system: hooks, registration, meta-tests, and a real third-party install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import dlg
from dlg import hookimpl, registrations
from dlg.cli import cli
from dlg.plugin_manager import build_plugin_manager

ROOT = Path(__file__).resolve().parent.parent

HOOKS = sorted(name for name in dir(build_plugin_manager(autoload=False).hook)
               if not name.startswith("_"))


def test_the_hooks_are_what_the_docs_promise():
    assert HOOKS == sorted([
        "before_turn", "dialogue_finished", "dialogue_started", "prepare_jinja_environment",
        "register_commands", "register_embeddings", "register_executors", "register_exporters",
        "register_models",
        "register_modes",
        "register_routers", "register_stores", "turn_chunk", "turn_finished", "turn_progress",
        "turn_started"])


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert re.search(rf"^### `{hook}\(", docs, re.M), f"docs/plugins.md lacks ### `{hook}(...)`"


def _hook_tests() -> list[tuple[str, str]]:
    """Every ``def test_hook_NAME(`` in tests/: (NAME, file)."""
    return [(m[1], p.relative_to(ROOT).as_posix())
            for p in sorted((ROOT / "tests").rglob("test_*.py"))
            for m in re.finditer(r"^(?:async )?def test_hook_(\w+)\(", p.read_text(), re.M)]


def test_every_hook_has_a_test():
    """Each hook has one test named ``test_hook_<hook>`` that runs it through a plugin
    (datasette's meta-test); a test named for a hook that is gone fails too."""
    tests = _hook_tests()
    named = [name for name, _ in tests]
    missing = [hook for hook in HOOKS if hook not in named]
    assert not missing, f"hooks without a test named test_hook_<hook> in tests/: {missing}"
    twice = sorted({f"{name} ({where})" for name, where in tests if named.count(name) > 1})
    assert not twice, f"hooks with more than one test_hook_<hook>: {twice}"
    stale = [f"test_hook_{name} ({where})" for name, where in tests if name not in HOOKS]
    assert not stale, f"tests named for hooks that do not exist: {stale}"


def test_hook_register_routers(pm):
    from tests.routing_support import FixedRouter, FixedRouterPlugin

    pm.register(FixedRouterPlugin(), name="fixed-router")
    d = dlg.run_sync("debate", topic="x", router="fixed")
    assert {t.model for t in d.turns} == {"echo?words=1"}
    assert registrations.routers(pm)["fixed"].__class__ is FixedRouter


def test_hook_register_stores(pm):
    class Store:
        pass

    class Plugin:
        @hookimpl
        def register_stores(self, register):
            register("memory", lambda **options: Store())

    pm.register(Plugin(), name="memory-store")
    assert isinstance(registrations.stores(pm)["memory"](), Store)
    output = CliRunner().invoke(cli, ["plugins"], catch_exceptions=False).output
    assert "memory-store ()\n  stores: memory\n" in output


def test_hook_prepare_jinja_environment(pm, write_mode):
    class Plugin:
        @hookimpl
        def prepare_jinja_environment(self, env):
            env.filters["shout"] = lambda s: s.upper() + "!"

    pm.register(Plugin(), name="shout-filter")
    path = write_mode("name: j\ninputs: {topic: {}}\n"
                      "turns: [{id: a, role: A, prompt: '{{ topic | shout }}'}]\n")
    d = dlg.run_sync(path, topic="bees", model="echo")
    assert d.turns[0].prompt == "BEES!"


def test_hook_register_models(pm):
    class Plugin:
        @hookimpl
        def register_models(self, register):
            register("twin", lambda name, options: _echo(), description="Echo's twin")

    pm.register(Plugin(), name="twin-model")
    d = dlg.run_sync({"name": "m", "turns": [{"id": "a", "role": "A", "prompt": "hello"}]},
                     model="twin", store=None)
    assert d.status == "completed"
    assert (d.turns[0].model, d.turns[0].response) == ("twin", "echo: hello")
    assert registrations.model_providers(pm)["twin"].description == "Echo's twin"


def test_hook_register_modes(pm):
    class Plugin:
        @hookimpl
        def register_modes(self, register):
            register("tiny", {"name": "tiny", "inputs": {"topic": {}},
                              "participants": {"p": "echo?words=2"},
                              "turns": [{"id": "a", "role": "A", "participant": "p",
                                         "prompt": "on {{ topic }}"}]})

    pm.register(Plugin(), name="tiny-mode")
    d = dlg.run_sync("tiny", topic="bees", store=None)  # by name, on the mode's own model
    assert d.mode == "tiny" and d.status == "completed"
    assert (d.turns[0].prompt, d.turns[0].model) == ("on bees", "echo?words=2")
    listed = CliRunner().invoke(cli, ["modes", "list"], catch_exceptions=False).output
    assert re.search(r"^tiny +sequential +1 turns", listed, re.M), listed


def test_hook_register_exporters(pm):
    class Exporter:
        name, extension, description = "count", "txt", "Counts turns"

        def export(self, dialogue):
            return str(len(dialogue.turns))

    class Plugin:
        @hookimpl
        def register_exporters(self, register):
            register(Exporter())

    pm.register(Plugin(), name="counter")
    d = dlg.run_sync("debate", topic="x", model="echo", store=None)
    assert d.export("count") == str(len(d.turns))
    assert registrations.exporters(pm)["count"].extension == "txt"


# -- the lifecycle hooks: what each one is given, as a plugin sees it ------------------

TWO_TURNS = {"name": "two", "inputs": {"topic": {}},
             "turns": [{"id": "a", "role": "A", "prompt": "{{ topic }} a"},
                       {"id": "b", "role": "B", "prompt": "{{ topic }} b",
                        "when": "topic != 'skip b'"}]}


def test_hook_dialogue_started(pm):
    seen = []

    class Plugin:
        @hookimpl
        def dialogue_started(self, dialogue):
            seen.append((dialogue.id, dialogue.status, dialogue.inputs,
                         [t.status for t in dialogue.turns]))

    pm.register(Plugin(), name="start-watch")
    d = dlg.run_sync(TWO_TURNS, topic="bees", model="echo", store=None)
    assert seen == [(d.id, "running", {"topic": "bees"}, ["pending", "pending"])]


def test_hook_turn_started(pm):
    seen = []

    class Plugin:
        @hookimpl
        async def turn_started(self, dialogue, turn):  # an async implementation is awaited
            seen.append((turn.id, turn.status, turn.prompt, turn.model, turn.response))

    pm.register(Plugin(), name="turn-watch")
    dlg.run_sync(TWO_TURNS, topic="bees", model="echo?words=2", store=None)
    # after its prompt is rendered and its model chosen, before the answer
    assert seen == [("a", "running", "bees a", "echo?words=2", None),
                    ("b", "running", "### A\necho: bees a\n\nbees b", "echo?words=2", None)]


def test_hook_turn_chunk(pm):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    pieces = []

    class Plugin:
        @hookimpl
        def turn_chunk(self, turn, text):
            pieces.append((turn.id, text))

    pm.register(Plugin(), name="stream-watch")
    model = GenericFakeChatModel(messages=iter([AIMessage(content="one two three")]))
    d = dlg.run_sync({"name": "s", "turns": [{"id": "a", "role": "A", "prompt": "go"}]},
                     model=model, store=None)
    assert len(pieces) > 1 and {turn for turn, _ in pieces} == {"a"}
    assert "".join(text for _, text in pieces) == d.turns[0].response == "one two three"


def test_hook_turn_finished(pm):
    seen = []

    class Plugin:
        @hookimpl
        def turn_finished(self, dialogue, turn):
            seen.append((turn.id, turn.status, turn.response, turn.error))

    pm.register(Plugin(), name="end-watch")
    dlg.run_sync(TWO_TURNS, topic="skip b", model="echo", store=None)
    assert seen == [("a", "completed", "echo: skip b a", None), ("b", "skipped", None, None)]
    failed = dlg.run_sync(TWO_TURNS, topic="x", model="echo?fail=always", store=None)
    assert failed.turns[0].error and seen[2:] == [("a", "failed", None, failed.turns[0].error)]


def test_hook_dialogue_finished(pm):
    seen = []

    class Plugin:
        @hookimpl
        def dialogue_finished(self, dialogue):
            seen.append((dialogue.status, [t.status for t in dialogue.turns]))

    pm.register(Plugin(), name="finish-watch")
    dlg.run_sync(TWO_TURNS, topic="skip b", model="echo", store=None)
    dlg.run_sync(TWO_TURNS, topic="x", model="echo?fail=always", store=None)
    assert seen == [("completed", ["completed", "skipped"]), ("failed", ["failed", "pending"])]


def _echo():
    from dlg.plugins.echo_model import EchoChatModel

    return EchoChatModel()


def test_invalid_registration_is_a_plugin_error(pm):
    class Plugin:
        @hookimpl
        def register_exporters(self, register):
            register(object())

    pm.register(Plugin(), name="broken")
    with pytest.raises(dlg.PluginError, match="plugin 'broken' registered <object object"):
        registrations.exporters(pm)


def test_misspelt_hook_fails_loudly(monkeypatch):
    import pluggy

    class Plugin:
        @hookimpl
        def register_model(self, register):  # missing the s
            pass

    pm = pluggy.PluginManager("dlg")
    from dlg import hookspecs

    pm.add_hookspecs(hookspecs)
    pm.register(Plugin())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_module_plugins_are_read_as_pluggy_reads_them():
    """dlg's manager reads a module plugin's names from its namespace (quicker than
    pluggy's lookup); what it finds is what pluggy finds, misspelt hooks included."""
    import importlib
    import types

    import pluggy

    from dlg import hookspecs, plugin_manager

    ours = plugin_manager._PluginManager("dlg")
    theirs = pluggy.PluginManager("dlg")
    odd = types.ModuleType("odd_plugin")
    exec("from dlg import hookimpl\n"
         "@hookimpl\ndef register_model(register): pass\n"  # missing the s
         "value = 3\nname = 'odd'\n", odd.__dict__)
    odd.wrapped = staticmethod(hookimpl(lambda register: None))
    modules = [importlib.import_module(n) for n in plugin_manager.BUILTIN_PLUGINS] + [odd]
    for module in modules:
        for name in dir(module):
            assert ours.parse_hookimpl_opts(module, name) == theirs.parse_hookimpl_opts(
                module, name), (module.__name__, name)
    ours.add_hookspecs(hookspecs)
    ours.register(odd)
    with pytest.raises(pluggy.PluginValidationError):
        ours.check_pending()


def test_later_plugin_overrides_builtin_name(pm):
    class Md:
        name, extension, description = "markdown", "md", "replacement"

        def export(self, dialogue):
            return "mine"

    class Plugin:
        @hookimpl
        def register_exporters(self, register):
            register(Md())

    pm.register(Plugin(), name="md-replacement")
    assert registrations.exporters(pm)["markdown"].description == "replacement"


# -- a real third-party package, built and pip-installed --------------------------------


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "example_plugin"
    import shutil

    shutil.copytree(ROOT / "tests" / "example_plugin", source)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def run_dlg(target, *args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DLG_")}
    environ.update(PYTHONPATH=str(target), DLG_CACHE_DIR=str(target / "cache"), **env)
    return subprocess.run([sys.executable, "-m", "dlg", *args], capture_output=True, text=True,
                          env=environ)


@pytest.mark.slow
def test_pip_installed_plugin_adds_model_mode_and_exporter(installed_plugin):
    listing = run_dlg(installed_plugin, "plugins")
    assert listing.returncode == 0, listing.stderr
    assert ("shout (dlg-shout 1.0.0)\n  models: shout\n  exporters: csv\n  modes: rally\n"
            in listing.stdout)
    assert "rally" in run_dlg(installed_plugin, "modes", "list").stdout

    result = run_dlg(installed_plugin, "run", "rally", "--topic", "bikes", "--format", "csv",
                     "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "index,id,model,tokens,response\n"
        "1,call,shout,5,WE WANT BIKES!\n"
        "2,response,shout,5,WHEN DO WE WANT IT!\n"
    )
    # the plugin's model also works with built-in modes
    result = run_dlg(installed_plugin, "run", "detective", "-t", "x", "-m", "shout", "-q")
    assert result.returncode == 0 and "CONFIDENCE: <A PERCENTAGE>!" in result.stdout


@pytest.mark.slow
def test_autoload_can_be_disabled_or_restricted(installed_plugin):
    off = run_dlg(installed_plugin, "plugins", DLG_DISABLE_PLUGIN_AUTOLOAD="1")
    assert "shout" not in off.stdout
    only_other = run_dlg(installed_plugin, "plugins", DLG_PLUGINS="something-else")
    assert "shout" not in only_other.stdout and only_other.returncode == 0
    assert ("DLG_PLUGINS names 'something-else', which no installed plugin has "
            "(installed: shout)") in only_other.stderr  # a typo does not pass unseen
    only_shout = run_dlg(installed_plugin, "plugins", DLG_PLUGINS="shout")
    assert "shout (dlg-shout 1.0.0)" in only_shout.stdout
    missing = run_dlg(installed_plugin, "run", "rally", "-t", "x",
                      DLG_DISABLE_PLUGIN_AUTOLOAD="1")
    assert missing.returncode == 2
    assert "Error: <mode>: $: 'rally' is not a known mode and not a file" in missing.stderr


def _fake_dist(site: Path, name: str) -> None:
    (site / f"{name}.py").write_text(
        "from dlg import hookimpl\n\n@hookimpl\ndef register_routers(register):\n"
        f"    register({name!r}, type('R', (), {{'select': lambda self, r: 'echo'}})())\n")
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[dlg]\n{name} = {name}\n")


def test_entry_point_cache_notices_new_installs(tmp_path, monkeypatch):
    from dlg import plugin_manager

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    _fake_dist(site, "plug_one")
    assert [e["name"] for e in plugin_manager._discover()] == ["plug_one"]
    assert [e["name"] for e in plugin_manager._discover()] == ["plug_one"]  # cached
    _fake_dist(site, "plug_two")
    assert sorted(e["name"] for e in plugin_manager._discover()) == ["plug_one", "plug_two"]
    pm = build_plugin_manager(autoload=True)
    assert {"plug_one", "plug_two"} <= set(registrations.routers(pm))
    assert plugin_manager.plugin_distribution("plug_two") == "plug_two 1.0"


def test_entry_point_cache_ignores_other_files(tmp_path, monkeypatch):
    """Files written to a sys.path directory without any package metadata (the working
    directory ``python -m dlg`` puts first) do not make start-up scan every package
    again; a directory that gains its first package does."""
    import importlib.metadata

    from dlg import plugin_manager

    scans = []
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: scans.append(1) or real(**kw))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.syspath_prepend(str(work))
    plugin_manager._discover()
    (work / "dialogue.json").write_text("{}")
    os.utime(work, ns=(1, 1))  # as if long ago: the mtime changed either way
    assert plugin_manager._discover() == plugin_manager._discover()
    assert len(scans) == 1
    _fake_dist(work, "plug_three")
    assert [e["name"] for e in plugin_manager._discover()] == ["plug_three"]
    assert len(scans) == 2


def test_broken_plugin_is_reported_by_name(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    info = site / "plug_bad-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-bad\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dlg]\nbad = plug_bad_missing\n")
    with pytest.raises(dlg.PluginError, match=r"plugin 'bad' \(from plug-bad 1.0\) failed to "
                                              r"load: ModuleNotFoundError"):
        build_plugin_manager(autoload=True)
