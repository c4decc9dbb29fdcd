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


def test_hook_list_is_what_the_docs_promise():
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


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    found = [p.name for p in (ROOT / "tests").glob("test_*.py")
             if re.search(rf"\bdef {hook}\(", p.read_text())]
    assert found, f"no test implements the hook {hook}"


def test_register_routers(pm):
    class Fixed:
        def select(self, request):
            return "echo?words=1"

    class Plugin:
        @hookimpl
        def register_routers(self, register):
            register("fixed", Fixed())

    pm.register(Plugin(), name="fixed-router")
    d = dlg.run_sync("debate", topic="x", router="fixed")
    assert {t.model for t in d.turns} == {"echo?words=1"}
    assert registrations.routers(pm)["fixed"].__class__ is Fixed


def test_register_stores(pm):
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


def test_prepare_jinja_environment(pm, write_mode):
    class Plugin:
        @hookimpl
        def prepare_jinja_environment(self, env):
            env.filters["shout"] = lambda s: s.upper() + "!"

    pm.register(Plugin(), name="shout-filter")
    path = write_mode("name: j\ninputs: {topic: {}}\n"
                      "turns: [{id: a, role: A, prompt: '{{ topic | shout }}'}]\n")
    d = dlg.run_sync(path, topic="bees", model="echo")
    assert d.turns[0].prompt == "BEES!"


def test_register_models_and_modes_and_exporters_from_a_plugin_object(pm):
    class Exporter:
        name, extension, description = "count", "txt", "Counts turns"

        def export(self, dialogue):
            return str(len(dialogue.turns))

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register("twin", lambda name, options: _echo(), description="Echo's twin")

        @hookimpl
        def register_modes(self, register):
            register("tiny", {"name": "tiny", "participants": {"p": "twin"},
                              "turns": [{"id": "a", "role": "A", "participant": "p",
                                         "prompt": "hello"}]})

        @hookimpl
        def register_exporters(self, register):
            register(Exporter())

    pm.register(Plugin(), name="objects")
    d = dlg.run_sync("tiny")
    assert d.turns[0].model == "twin" and d.status == "completed"
    assert d.export("count") == "1"


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
