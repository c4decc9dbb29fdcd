"""What the user sees from the dlg command line."""

from __future__ import annotations

import json
import os
import re

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kwargs)


def test_version():
    result = invoke("--version")
    assert result.output == f"dlg, version {dlg.__version__}\n"


def test_run_shows_turns_as_they_complete():
    result = invoke("run", "debate", "--topic", "Ban cars?", "--model", "echo?words=4")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith(
        "\n## 1. Proposition (proponent · echo?words=4)\n\necho: Open the case FOR\n")
    assert out.count("\n## ") == 6
    err = result.stderr
    assert re.match(r"dlg: debate · dialogue \d{8}-\d{6}-[0-9a-f]{8}\n", err)
    assert "▶ [1/6] Proposition · proponent · echo?words=4\n" in err
    assert re.search(r"✓ \[6/6\] Verdict · \d+\.\d\ds · \d+ tokens\n", err)
    assert re.search(r"completed: 6/6 turns · \d+\.\d\ds · \d+ tokens\n$", err)


def test_run_quiet_prints_only_the_turns():
    result = invoke("run", "detective", "-t", "x", "-m", "echo", "-q")
    assert result.stderr == ""
    assert result.stdout.count("\n## ") == 5


def test_run_json_to_stdout_is_the_full_record():
    result = invoke("run", "panel", "--topic", "x", "--model", "echo", "--format", "json", "-q")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["status"] == "completed"
    assert [t["id"] for t in data["turns"]] == ["technical", "ethical", "economic", "synthesis"]
    assert all(t["usage"]["total"] > 0 for t in data["turns"])


def test_run_out_file_picks_format_from_extension(tmp_path):
    out = tmp_path / "d.md"
    result = invoke("run", "detective", "-t", "x", "-m", "echo", "--out", str(out))
    assert result.exit_code == 0
    assert f"wrote {out}\n" in result.stderr
    assert out.read_text().startswith("# detective: x\n")


def test_an_out_file_that_cannot_be_written_is_refused_before_the_dialogue_runs(tmp_path):
    """It used to run (and pay for) the whole dialogue, then end with a traceback."""
    missing = tmp_path / "no-such-folder" / "out.md"
    ran = CliRunner().invoke(cli, ["run", "debate", "-t", "x", "-m", "echo", "-q",
                                   "-o", str(missing)])
    assert ran.exit_code == 2 and "Traceback" not in ran.output
    assert ran.stderr == (f"Error: --out {missing}: the folder {missing.parent} does not "
                          "exist\n")
    assert dlg.list_dialogues() == []  # nothing ran
    d = dlg.run_sync("debate", topic="x", model="echo")
    with pytest.raises(dlg.ExportError, match=r"^cannot write .*out\.md: No such file"):
        d.export("markdown", path=missing)
    assert not list(tmp_path.iterdir())  # no .tmp left behind either


def test_run_inputs_and_participants():
    result = invoke("run", "pipeline", "-t", "bees", "-i", "audience=children", "-i",
                    "words=120", "-p", "editor=echo?words=2", "-m", "echo", "-f", "json", "-q")
    data = json.loads(result.stdout)
    assert data["inputs"] == {"topic": "bees", "audience": "children", "words": 120}
    assert data["participants"]["editor"] == "echo?words=2"
    assert data["turns"][3]["model"] == "echo?words=2"
    assert data["turns"][0]["model"] == "echo"


def test_missing_topic_is_usage_error():
    result = invoke("run", "debate", "--model", "echo")
    assert result.exit_code == 2
    assert result.output == (
        "Error: mode 'debate' needs the input 'topic' (The motion under debate): "
        "pass --topic TEXT\n")


def test_bad_input_pair():
    result = invoke("run", "debate", "-t", "x", "-i", "oops", "-m", "echo")
    assert result.exit_code == 2
    assert "Invalid value for --input: 'oops' is not KEY=VALUE" in result.output


def test_unknown_model_provider():
    result = invoke("run", "debate", "-t", "x", "--model", "ecco")
    assert result.exit_code == 2
    assert result.output == (
        "Error: 'ecco' is not a known model: no provider 'ecco' is installed; did you mean "
        "'echo'? (installed: anthropic, community, echo, google, local, ollama, openai, "
        "openai-compatible, xai)\n")


@pytest.mark.parametrize(("given", "meant"), [
    ("gpt-4o", "openai:gpt-4o"),
    ("gpt-4o?temperature=0.2", "openai:gpt-4o?temperature=0.2"),  # its options kept
    ("claude-sonnet-4-5", "anthropic:claude-sonnet-4-5"),
])
def test_a_model_named_without_its_provider_gets_the_registry_spec(given, meant):
    """`--model gpt-4o` said only that no provider 'gpt-4o' is installed, where
    `dlg models show gpt-4o` names 'openai:gpt-4o'."""
    result = invoke("run", "debate", "-t", "x", "--model", given)
    assert result.exit_code == 2
    assert result.output == (
        f"Error: '{given}' is not a known model: no provider '{given.partition('?')[0]}' "
        f"is installed; did you mean '{meant}'? (a model is given as provider:model; "
        "installed: anthropic, community, echo, google, local, ollama, openai, "
        "openai-compatible, xai)\n")


def test_no_model_configured_and_no_local_model(tmp_path, monkeypatch):
    monkeypatch.setenv("DLG_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("DLG_LOCAL_MODEL", raising=False)
    result = invoke("run", "debate", "-t", "x")
    assert result.exit_code == 2
    assert result.output == (
        f"Error: 'local' cannot run: no local model file at {tmp_path}/SmolLM2-135M-Instruct"
        ".Q4_1.gguf: run `dlg models pull` (about 94 MB, once)\n")


def test_unknown_format_fails_before_running():
    result = invoke("run", "debate", "-t", "x", "-m", "echo", "-f", "docx")
    assert result.exit_code == 2
    assert result.output == (
        "Error: 'docx' is not a known export format "
        "(installed: csv, html, json, jsonl, markdown, pdf)\n")


def test_failed_dialogue_exits_1(write_mode):
    path = write_mode("name: f\nparticipants: {p: 'echo?fail=always'}\n"
                      "turns: [{id: a, role: A, participant: p, prompt: x}]\n")
    result = invoke("run", str(path))
    assert result.exit_code == 1
    assert "✗ [1/1] A · failed: echo?fail=always: RuntimeError: echo model asked to fail\n" in (
        result.stderr)
    assert re.search(r"^failed: 0/1 turns · \d+\.\d\ds · 0 tokens$", result.stderr, re.M)
    (saved,) = dlg.list_dialogues()
    assert result.stderr.endswith(
        "Error: dialogue failed: turn 'a' failed: echo?fail=always: RuntimeError: echo "
        f"model asked to fail\n`dlg resume {saved['id']}` continues it.\n")


def test_traceback_flag_shows_tracebacks():
    runner = CliRunner()
    result = runner.invoke(cli, ["--traceback", "run", "nosuchmode", "-m", "echo"])
    assert isinstance(result.exception, dlg.ModeNotFoundError)


def test_modes_list():
    result = invoke("modes", "list")
    lines = result.output.splitlines()
    assert [ln.split()[0] for ln in lines] == [
        "debate", "detective", "detective-deep", "dynamic", "loop", "panel", "pipeline",
        "podcast", "refine"]
    assert lines[5].startswith("panel           mixed        4 turns  Three experts")
    # a child mode has its own description, not its parent's
    assert lines[2].startswith("detective-deep  sequential   7 turns  The detective mode, deeper")


def test_modes_list_json():
    data = json.loads(invoke("modes", "list", "--json").output)
    assert {d["name"]: d["turns"] for d in data} == {
        "debate": 6, "detective": 5, "detective-deep": 7, "dynamic": 3, "loop": 8, "panel": 4,
        "pipeline": 7, "podcast": 10, "refine": 3}
    assert {d["plugin"] for d in data} == {"dlg.plugins.builtin_modes"}


def test_modes_list_shows_the_modes_in_the_users_folders_too(tmp_path, monkeypatch):
    """They run by name, but `dlg modes list` listed only the plugins' modes."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    one = "name: {}\ndescription: {}\nturns: [{{id: a, role: A, prompt: hi}}]\n"
    (first / "mine.yaml").write_text(one.format("mine", "from the first folder"))
    (second / "mine.yaml").write_text(one.format("mine", "hidden by the first"))
    (second / "broken.json").write_text('{"name": "broken", "turns": "nope"}')
    (second / "debate.yaml").write_text(one.format("debate", "hidden by the built-in"))
    monkeypatch.setenv("DLG_MODES_PATH", os.pathsep.join([str(first), str(second)]))
    data = {d["name"]: d for d in json.loads(invoke("modes", "list", "--json").output)}
    assert data["mine"]["file"] == str(first / "mine.yaml")
    assert data["mine"]["description"] == "from the first folder"
    assert data["broken"]["description"].startswith("INVALID: ")
    assert data["debate"]["plugin"] == "dlg.plugins.builtin_modes"
    lines = invoke("modes", "list").output.splitlines()
    assert lines[-1].startswith("mine            sequential   1 turns  from the first folder")
    missed = invoke("run", "mien", "-m", "echo")
    assert "did you mean 'mine'?" in missed.output


def test_modes_show_source_and_resolved():
    assert invoke("modes", "show", "detective-deep").output.startswith("# Inheritance example")
    resolved = invoke("modes", "show", "detective-deep", "--resolved").output
    assert resolved.startswith("name: detective-deep\n")
    assert "extends" not in resolved
    assert "- id: meta_analysis\n" in resolved


def test_modes_validate_ok(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nturns: [{id: a, role: A, prompt: hi}]\n")
    result = invoke("modes", "validate", str(path), "debate", "panel")
    assert result.exit_code == 0
    assert result.output == (f"ok: {path}: mode 'm', 1 turns\nok: debate: mode 'debate', 6 turns\n"
                             "ok: panel: mode 'panel', 4 turns in 2 phases\n")


def test_plugins_lists_builtins_and_what_they_register():
    result = invoke("plugins")
    assert result.output == (
        "dlg.plugins.catalog (built-in)\n"
        "dlg.plugins.profiles (built-in)\n"
        "dlg.plugins.prices (built-in)\n"
        "dlg.plugins.local (built-in)\n"
        "  models: local\n"
        "dlg.plugins.openai (built-in)\n"
        "  models: openai, openai-compatible\n"
        "dlg.plugins.anthropic (built-in)\n"
        "  models: anthropic\n"
        "dlg.plugins.google (built-in)\n"
        "  models: google\n"
        "dlg.plugins.xai (built-in)\n"
        "  models: xai\n"
        "dlg.plugins.ollama (built-in)\n"
        "  models: ollama\n"
        "dlg.plugins.community (built-in)\n"
        "  models: community\n"
        "dlg.plugins.echo (built-in)\n"
        "  models: echo\n"
        "dlg.plugins.builtin_modes (built-in)\n"
        "  modes: debate, detective, detective-deep, dynamic, loop, panel, pipeline, podcast, "
        "refine\n"
        "dlg.plugins.exporters (built-in)\n"
        "  exporters: json, markdown, jsonl, csv\n"
        "dlg.plugins.report (built-in)\n"
        "  exporters: html\n"
        "dlg.plugins.pdf (built-in)\n"
        "  exporters: pdf\n"
        "dlg.plugins.router (built-in)\n"
        "  routers: participants, capabilities\n"
        "dlg.plugins.learned_router (built-in)\n"
        "  routers: learned\n"
        "dlg.plugins.hashing_embeddings (built-in)\n"
        "  embeddings: hashing\n"
        "dlg.plugins.sqlite_store (built-in)\n"
        "  stores: sqlite\n"
        "dlg.plugins.diskcache_store (built-in)\n"
        "  stores: diskcache\n"
        "dlg.plugins.postgres_store (built-in)\n"
        "  stores: postgres\n"
        "dlg.plugins.ray_executor (built-in)\n"
        "  executors: ray\n"
        "dlg.plugins.telemetry (built-in)\n"
    )


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dlg", "--version"], capture_output=True,
                          text=True, check=True)
    assert proc.stdout == f"dlg, version {dlg.__version__}\n"


def test_run_a_mode_from_standard_input():
    mode = "name: piped\ninputs: {topic: {}}\nturns: [{id: a, role: A, prompt: '{{ topic }}'}]\n"
    result = CliRunner().invoke(cli, ["run", "-", "--topic", "bees", "--model", "echo", "-q",
                                      "--no-stream"], input=mode, catch_exceptions=False)
    assert result.exit_code == 0
    assert "echo: bees" in result.output
    bad = CliRunner().invoke(cli, ["run", "-", "--model", "echo"], input="name: [x\n")
    assert bad.exit_code == 2 and bad.output.startswith("Error: <stdin>:")
    empty = CliRunner().invoke(cli, ["run", "-", "--model", "echo"], input="")
    assert "nothing on standard input" in empty.output


def test_an_unquoted_colon_gets_a_quoting_hint(write_mode):
    path = write_mode("name: q\nturns:\n  - id: a\n    role: A\n"
                      "    prompt: Answer this: what is X?\n")
    result = CliRunner().invoke(cli, ["modes", "validate", str(path)])
    assert 'hint: a value that contains \': \' must be quoted: prompt: "Answer this: what ' \
           'is X?"' in result.output


def test_all_errors_reports_template_problems_beside_the_others(write_mode):
    path = write_mode("name: q\ninputs: {topic: {}}\nturns:\n"
                      "  - {id: a, role: A, participant: nobody, prompt: '{{ topicc }}'}\n")
    result = CliRunner().invoke(cli, ["modes", "validate", str(path), "--all-errors"])
    assert "uses 'topicc'" in result.output and "names participant 'nobody'" in result.output


def test_the_live_view_shows_every_turn_and_renders_markdown(recorder):
    """The terminal view (rich), driven as the CLI drives it, on a recorded terminal."""
    import io

    from rich.console import Console

    from dlg.cli.display import LiveProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    orchestrator = dlg.Orchestrator(model=recorder(["# Title\n\n**bold** point"]),
                                    store=None)
    mode, dialogue = orchestrator.start(
        {"name": "v", "turns": [{"id": "a", "role": "Opening", "prompt": "hi"},
                                {"id": "b", "role": "Reply", "prompt": "again"}]})
    live = LiveProgress(dialogue, show_text=True, stream=False, parallel=set(),
                        console=console)
    live._same_terminal, live.out = True, console  # stdout shares the terminal
    orchestrator.observers = (live,)
    import anyio

    with live:
        anyio.run(lambda: orchestrator.execute(mode, dialogue))
    text = screen.getvalue()
    assert "1. Opening" in text and "2. Reply" in text
    assert "**bold**" not in text and "bold point" in text  # Markdown rendered
    final = text[text.rindex("turn"):]  # the table left on screen at the end
    assert final.count("✓") == 2 and "Opening" in final and "Reply" in final
