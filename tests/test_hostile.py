"""Hostile modes and templates: confined files, bounded loading, bounded rendering."""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

from .servers import FakeOpenAI

MODE = "name: m\nturns: [{id: a, role: A, %s}]\n"


def _load_error(path) -> str:
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode(path)
    return info.value.format(all_problems=True)


# -- files a mode names stay in its folder ------------------------------------------------


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.txt", "sub/../../outside.txt",
                                  "~/outside.txt"])
def test_prompt_file_cannot_leave_the_mode_folder(tmp_path, name):
    (tmp_path / "outside.txt").write_text("SECRET")
    folder = tmp_path / "modes"
    (folder / "sub").mkdir(parents=True)
    mode = folder / "m.yaml"
    mode.write_text(MODE % f"prompt_file: '{name}'")
    text = _load_error(mode)
    assert f"prompt_file '{name}' not found" in text
    assert "must stay inside that folder" in text


def test_prompt_file_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "outside.txt").write_text("SECRET")
    folder = tmp_path / "modes"
    folder.mkdir()
    os.symlink(tmp_path / "outside.txt", folder / "p.txt")
    (folder / "inside.txt").write_text("hello {{ 'x' }}")
    mode = folder / "m.yaml"
    mode.write_text(MODE % "prompt_file: p.txt")
    assert "prompt_file 'p.txt' not found" in _load_error(mode)
    mode.write_text(MODE % "prompt_file: inside.txt")
    assert dlg.load_mode(mode).turns[0].prompt == "hello {{ 'x' }}"


@pytest.mark.parametrize("include", ["/etc/passwd", "../outside.txt", "link.txt"])
def test_include_cannot_leave_the_template_folders(tmp_path, include):
    (tmp_path / "outside.txt").write_text("SECRET")
    folder = tmp_path / "modes"
    folder.mkdir()
    os.symlink(tmp_path / "outside.txt", folder / "link.txt")
    mode = folder / "m.yaml"
    mode.write_text(MODE % f"prompt: \"{{% include '{include}' %}}\"")
    text = _load_error(mode)
    assert "prompt of turn 'a' includes" in text
    assert "SECRET" not in text


def test_include_inside_the_folder_still_works(tmp_path):
    (tmp_path / "part.j2").write_text("part says {{ 1 + 1 }}")
    mode = tmp_path / "m.yaml"
    mode.write_text(MODE % "prompt: \"{% include 'part.j2' %}\"")
    d = dlg.run_sync(mode, model="echo", store=None)
    assert d.turns[0].prompt == "part says 2"

def test_a_mode_document_given_a_folder_reads_its_files_there_and_only_there(tmp_path):
    (tmp_path / "outside.txt").write_text("SECRET")
    folder = tmp_path / "modes"
    folder.mkdir()
    (folder / "part.j2").write_text("part says {{ 1 + 1 }}")
    (folder / "p.txt").write_text("{% include 'part.j2' %}!")
    document = {"name": "m", "turns": [{"id": "a", "role": "A", "prompt_file": "p.txt"}]}
    mode = dlg.load_mode(document, base_dir=folder)
    assert dlg.run_sync(mode, model="echo", store=None).turns[0].prompt == "part says 2!"
    # without the folder, nothing is found; with it, nothing outside it is
    with pytest.raises(dlg.ModeError, match=r"prompt_file 'p\.txt' not found"):
        dlg.load_mode(document)
    leaving = {"name": "m", "turns": [{"id": "a", "role": "A",
                                      "prompt": "{% include '../outside.txt' %}"}]}
    with pytest.raises(dlg.ModeError, match="includes") as info:
        dlg.load_mode(leaving, base_dir=folder)
    assert "SECRET" not in info.value.format(all_problems=True)


def test_templates_that_include_each_other_load_and_fail_clearly(tmp_path):
    # a cycle is legal Jinja (a conditional include can end it): checking it must not
    # follow the cycle for ever, and rendering one that never ends fails the turn
    # with a message, not a traceback
    (tmp_path / "a.j2").write_text("A {{ topic }} {% include 'b.j2' %}")
    (tmp_path / "b.j2").write_text("B {% include 'a.j2' %}")
    mode = tmp_path / "m.yaml"
    mode.write_text("name: m\ninputs: {topic: {}}\n"
                    "turns: [{id: a, role: A, prompt: \"{% include 'a.j2' %}\"}]\n")
    assert dlg.load_mode(mode).turns[0].id == "a"
    ran = CliRunner().invoke(cli, ["run", str(mode), "-m", "echo", "--no-save",
                                   "--topic", "t"])
    assert ran.exit_code == 1
    assert "includes itself, directly or through other templates" in ran.output
    assert "Traceback" not in ran.output



# -- ids become file names ----------------------------------------------------------------


@pytest.mark.parametrize("given", ["../x", "a/b", "..", ".hidden", "", "a b", "x" * 200])
def test_a_dialogue_id_that_could_lead_out_of_a_folder_is_refused(given):
    with pytest.raises(dlg.InputError, match="cannot be used: give 1 to 128 letters"):
        dlg.run_sync({"name": "m", "turns": [{"id": "a", "role": "A", "prompt": "p"}]},
                     model="echo", store=None, dialogue_id=given)


def test_a_batch_id_that_could_lead_out_of_a_folder_is_refused(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "x"}\n')
    ran = CliRunner().invoke(cli, ["batch", "debate", "--inputs", str(rows), "-m", "echo",
                                   "--id", "../../etc"])
    assert ran.exit_code == 2
    assert "batch id '../../etc' cannot be used" in ran.output


def test_an_export_into_a_folder_stays_in_it_whatever_the_saved_id(tmp_path):
    # a store written by another tool (or an older dlg) may hold any id
    from dlg.records.export import write_export

    d = dlg.run_sync({"name": "m", "turns": [{"id": "a", "role": "A", "prompt": "p"}]},
                     model="echo", store=None)
    d.id = "../../escaped"
    folder = tmp_path / "out" / "deeper"
    folder.mkdir(parents=True)
    written = write_export(d, "json", folder)
    assert written.parent == folder and written.name == "_.._escaped.json"
    assert not (tmp_path / "escaped.json").exists()


# -- loading is bounded -------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("name: bomb\nturns: [{id: a, role: A, prompt: hi}]\ndescription: *a9")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines))
    started = time.perf_counter()
    text = _load_error(path)
    assert time.perf_counter() - started < 5
    assert "expands to more than 100,000 values" in text


def test_extends_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "parent.yaml"
    os.mkfifo(fifo)
    child = tmp_path / "child.yaml"
    child.write_text("extends: ./parent.yaml\nname: c\n")
    text = _load_error(child)
    assert "is not a regular file" in text


def test_extends_a_device_is_refused(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: /dev/zero\nname: c\n")
    assert "is not a regular file" in _load_error(child)


def test_a_huge_mode_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\ndescription: '" + "x" * (1 << 20) + "'\n")
    assert "the limit is 1,048,576" in _load_error(path)


@pytest.mark.parametrize("template", [
    "{{ 'a' * 10**9 }}", "{{ 10 ** 100000 }}", "{{ '%999999999s' % 'a' }}",
    "{{ 'a' * 1000 * 1000 * 1000 }}",
])
def test_constant_blow_ups_are_mode_errors(tmp_path, template):
    path = tmp_path / "m.yaml"
    path.write_text(MODE % f'prompt: "{template}"')
    started = time.perf_counter()
    text = _load_error(path)
    assert time.perf_counter() - started < 5
    assert "prompt" in text and ("not allowed" in text or "template limit" in text)


@pytest.mark.parametrize("template, message", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "loops ran more than 100,000 steps"),
    ("{% for i in range(50000) %}{{ 'x' * 1000 }}{% endfor %}",
     "produced more than 2,000,000 characters"),
    ("{{ 'a'.center(10**9) }}", "over the template limit"),
    ("{{ 'a' | center(10**8) }}", "over the template limit"),
    ("{{ '{:>999999999}'.format('a') }}", "format width or precision of millions"),
    ("{{ (range(1000) | list) * 100000 }}", "would build"),
])
def test_rendering_is_bounded_and_the_turn_says_why(template, message):
    mode = {"name": "r", "turns": [{"id": "a", "role": "A", "prompt": template}]}
    started = time.perf_counter()
    d = dlg.run_sync(mode, model="echo", store=None)
    assert time.perf_counter() - started < 5
    assert d.status == "failed"
    assert message in d.turns[0].error


# -- malformed modes are mode errors, never tracebacks --------------------------------------


@pytest.mark.parametrize("text, message", [
    ("name: m\n1: x\nturns: [{id: a, role: A, prompt: hi}]\n", "the key 1 is not a string"),
    ("name: m\nturns: [null]\n", "expected a mapping, got null"),
    ("name: m\nturns:\n" + "  " + "[" * 200 + "]" * 200 + "\n", "nested"),
    ("name: m\ntimeout: 1" + "0" * 5000 + "\nturns: [{id: a, role: A, prompt: hi}]\n",
     "invalid YAML"),
    ("name: m\ntimeout: 1" + "0" * 30 + "\nturns: [{id: a, role: A, prompt: hi}]\n",
     "this number is too large"),
])
def test_malformed_yaml_is_a_mode_error(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    assert message in _load_error(path)


def test_deep_json_and_huge_json_integers_are_mode_errors(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in _load_error(path)
    path.write_text('{"name": "m", "timeout": 1' + "0" * 5000 + "}")
    assert "invalid JSON" in _load_error(path)


def test_non_utf8_mode_is_a_mode_error_through_the_cli(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"name: m\ndescription: \xff\xfe\n")
    result = CliRunner().invoke(cli, ["run", str(path), "--model", "echo"])
    assert result.exit_code == 2
    assert "is not UTF-8 text" in result.output
    assert "Traceback" not in result.output


# -- model answers are bounded ------------------------------------------------------------


class _Flood:
    """A chat model whose answer is ``size`` characters (a broken or hostile endpoint),
    sent whole or streamed in 100,000-character pieces, with no usage of its own."""

    def __new__(cls, size: int):
        from langchain_core.language_models import BaseChatModel
        from langchain_core.messages import AIMessage, AIMessageChunk
        from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

        class Flood(BaseChatModel):
            size: int

            @property
            def _llm_type(self) -> str:
                return "flood"

            def _generate(self, *args, **kwargs):
                message = AIMessage(content="x" * self.size)
                return ChatResult(generations=[ChatGeneration(message=message)])

            async def _astream(self, *args, **kwargs):
                for start in range(0, self.size, 100_000):
                    piece = "y" * min(100_000, self.size - start)
                    yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

        return Flood(size=size)


NEXT = {"name": "n", "turns": [{"id": "a", "role": "A", "prompt": "go"},
                               {"id": "b", "role": "B", "prompt": "{{ turns.a }}"}]}


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_past_any_models_limit_is_cut_and_still_counted(stream, caplog):
    """Kept whole, it would be held, saved, and sent on in the next turn's prompt."""
    from dlg.models.calls import MAX_ANSWER

    size = MAX_ANSWER + 3_000_000
    chunks: list[str] = []
    caplog.set_level("WARNING", logger="dlg")

    class Watch:
        def turn_chunk(self, dialogue, turn, text):
            chunks.append(text)

    d = dlg.Orchestrator(model=_Flood(size), store=None,
                         observers=[Watch()] if stream else []).run_sync(NEXT)
    assert d.status == "completed"
    first = d.turns[0].response
    assert len(first) < MAX_ANSWER + 100
    assert first.endswith(f"[dlg cut this answer at {MAX_ANSWER:,} characters; it was "
                          f"{size:,}]")
    assert d.turns[0].usage.completion == size // 4  # paid for, so counted: all of it
    assert len(d.turns[1].prompt) < MAX_ANSWER + 100  # what the next turn was sent
    if stream:
        assert sum(map(len, chunks)) <= 2 * MAX_ANSWER  # two turns' pieces, each cut
    assert any(r.getMessage() == f"an answer of {size} characters was cut at {MAX_ANSWER}"
               for r in caplog.records)


@pytest.mark.parametrize("usage", [
    {"input_tokens": -1_000_000, "output_tokens": 5, "total_tokens": 0},
    {"input_tokens": 10, "output_tokens": 10**18, "total_tokens": 10**18},
])
def test_token_counts_that_are_not_counts_are_estimated(usage):
    """A provider's usage is not trusted blindly: a negative count made a negative cost,
    which gave the budget back money it never had, and a count of 10**18 tokens cost
    more than any budget holds. (LangChain itself refuses counts that are no integers.)"""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Liar(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "liar"

        def _generate(self, *args, **kwargs):
            message = AIMessage(content="an answer of some words", usage_metadata=usage)
            return ChatResult(generations=[ChatGeneration(message=message)])

    d = dlg.run_sync({"name": "x", "turns": [{"id": "a", "role": "A", "prompt": "hi"}]},
                     model=Liar(), store=None)
    assert d.status == "completed"
    counted = d.turns[0].usage
    assert counted.estimated and counted.prompt > 0 and counted.completion > 0


@pytest.mark.parametrize(("name", "text"), [
    ("m.json", '{"name": "m", "turns": [{"id": "a", "role": "A", "prompt": "hi"}]}'),
    ("m.yaml", "name: m\nturns: [{id: a, role: A, prompt: hi}]\n"),
])
def test_a_mode_file_that_starts_with_a_byte_order_mark_loads(tmp_path, name, text):
    """Notepad and others put one first; a JSON mode was "invalid JSON: Unexpected UTF-8
    BOM"."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert dlg.load_mode(path).name == "m"


# -- text that is not valid Unicode: no file, store or terminal can take it -------------

@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_with_a_lone_surrogate_is_kept_as_valid_text(stream):
    """A provider's JSON can carry a lone ``\\ud800`` escape; the save used to fail with
    "surrogates not allowed", failing the dialogue after its turn was paid for."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(responses=["bad \ud800 text and \udcff"])

    class Watch:
        def turn_chunk(self, dialogue, turn, text):
            text.encode("utf-8")  # what a display gets is printable too

    d = dlg.Orchestrator(model=model, store="sqlite",
                         observers=[Watch()] if stream else []).run_sync(
        {"name": "s", "turns": [{"id": "a", "role": "R", "prompt": "p"}]})
    assert d.status == "completed", d.error
    assert d.turns[0].response == "bad \ufffd text and \ufffd"
    assert dlg.load_dialogue(d.id).turns[0].response == d.turns[0].response
    assert "\ufffd" in d.export("json")


def test_an_input_that_is_not_valid_unicode_is_refused_before_anything_runs():
    """``--topic`` with a byte that is not UTF-8 (a terminal set to Latin-1) arrives as a
    lone surrogate: the dialogue ran, paid, and then could not be saved."""
    with pytest.raises(dlg.InputError, match=r"^input 'topic': the text is not valid "
                                             r"Unicode at character 5 \(a byte that is not "
                                             r"UTF-8, or a lone surrogate\)"):
        dlg.run_sync("debate", topic="bad \udcff byte", model="echo", store=None)
    result = CliRunner().invoke(cli, ["run", "debate", "-m", "echo", "--no-save",
                                      "--topic", "bad \udcff byte"])
    assert result.exit_code == 2
    assert "input 'topic': the text is not valid Unicode" in result.stderr


def test_an_id_that_is_not_valid_unicode_is_no_dialogue():
    result = CliRunner().invoke(cli, ["show", "\udcff"])
    assert result.exit_code == 2
    assert "'\\udcff' is not a dialogue id" in result.stderr  # it said the store failed


def test_a_batch_row_that_is_not_valid_unicode_names_its_row(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "fine"}\n{"topic": "bad \\ud800"}\n')
    with pytest.raises(dlg.InputError, match=r"rows\.jsonl:2: \$\.topic: the text is not "
                                             r"valid Unicode at character 5"):
        dlg.batch_sync("debate", str(rows), model="echo", store=None)


def test_the_store_keeps_a_lone_surrogate_from_anywhere_as_it_was():
    from dlg.records.tables import dumps

    value = {"metadata": {"note": "a\ud800b", "ok": "é"}}
    text = dumps(value)
    text.encode("utf-8")  # what SQLite and PostgreSQL are given
    assert json.loads(text) == value


def test_an_export_file_takes_text_utf8_cannot_hold(tmp_path):
    """What a plugin put in a record may still hold a lone surrogate: the file is
    written (as the ``\\ud800`` escape, which a JSON reader gives back), not a
    traceback."""
    d = dlg.run_sync({"name": "s", "turns": [{"id": "a", "role": "R", "prompt": "p"}]},
                     model="echo", store=None)
    d.metadata["note"] = "bad \ud800 note"
    path = d.export("json", path=tmp_path / "d.json")
    assert json.loads(path.read_text())["metadata"]["note"] == "bad \ud800 note"
    d.export("markdown", path=tmp_path / "d.md")  # written too


# -- keys a provider echoes back ------------------------------------------------------------


def _everything_a_person_or_a_file_sees(runner, result, data_dir) -> tuple[str, bytes]:
    """The run's output, then what show, ls and every exporter give of the saved dialogue;
    and every byte the store wrote (its WAL included)."""
    from dlg import registrations

    (saved,) = dlg.list_dialogues()
    outputs = [result.output, result.stderr]
    for args in (["show", saved["id"]], ["show", saved["id"], "--json", "--text"],
                 ["ls", "--json"]):
        outputs.append(runner.invoke(cli, args, catch_exceptions=False).output)
    dialogue = dlg.load_dialogue(saved["id"])
    files = b""
    for name, exporter in registrations.exporters().items():
        if name == "pdf":  # its text is compressed: the same record the html is made from
            continue
        made = exporter.export(dialogue)
        outputs.append(made if isinstance(made, str) else made.decode("utf-8", "replace"))
    for path in data_dir.rglob("*"):
        if path.is_file():
            files += path.read_bytes()
    return "\n".join(outputs), files


@pytest.mark.parametrize("given", ["api_key_env", "env_reference", "provider_variable",
                                   "provider_option"])
def test_a_key_a_provider_echoes_is_redacted_however_it_was_given(given, monkeypatch,
                                                                  tmp_path):
    """A 401 that repeats the key (OpenAI's "Incorrect API key provided: ...") put a key
    read through ``api_key_env=NAME`` into the output, show, exports and the store's WAL:
    the variable's name says nothing of a secret, so nothing knew to redact its value.
    A literal key in the provider's own option (``openai_api_key=...``) was not even
    redacted from the spec saved with the dialogue."""
    pytest.importorskip("langchain_openai")
    import uuid

    key = f"gw-{given}-{uuid.uuid4().hex}"  # no known key shape, seen by no earlier test
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DLG_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DLG_LOG", "json")
    monkeypatch.setenv("DLG_LOG_LEVEL", "DEBUG")
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if given == "provider_variable":
        monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", key)
    else:
        monkeypatch.setenv("GATEWAY_CREDENTIAL", key)
    option = {"api_key_env": "&api_key_env=GATEWAY_CREDENTIAL",
              "env_reference": "&api_key=env:GATEWAY_CREDENTIAL",
              "provider_variable": "", "provider_option": ""}[given]
    runner = CliRunner()
    with FakeOpenAI(["401echo"]) as server:
        spec = f"openai-compatible:m?base_url={server.base_url}{option}"
        if given == "provider_option":  # OpenAI's own name for it, at its endpoint
            monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
            spec = f"openai:gpt-4o-mini?openai_api_key={key}"
        result = runner.invoke(cli, ["run", "debate", "--topic", "t", "--model", spec],
                               catch_exceptions=False)
        assert server.requests[0]["auth"] == f"Bearer {key}"  # the key was really sent
    assert result.exit_code != 0
    assert "Incorrect API key provided: [REDACTED]" in result.output + result.stderr
    text, files = _everything_a_person_or_a_file_sees(runner, result, data_dir)
    assert "Incorrect API key provided: [REDACTED]" in text
    assert key not in text
    assert key.encode() not in files
    assert any(p.name.endswith("-wal") for p in data_dir.rglob("*"))  # read above too


def test_an_authorization_header_in_a_reply_is_redacted(monkeypatch, tmp_path):
    """``Authorization: Bearer xyz`` in an answer or an error: the credentials, however
    short, are not kept."""
    pytest.importorskip("langchain_openai")
    from dlg.observability.redact import redact

    assert redact('failed: {"Authorization": "Bearer xyz"}') == (
        'failed: {"Authorization": "Bearer [REDACTED]"}')
    assert redact("sent Authorization: Basic dXNlcjpwdw==, refused") == (
        "sent Authorization: Basic [REDACTED], refused")
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DLG_DATA_DIR", str(data_dir))
    runner = CliRunner()
    with FakeOpenAI(["ok"], reply="call it with Authorization: Bearer xyz and go") as server:
        spec = f"openai-compatible:m?base_url={server.base_url}"
        result = runner.invoke(cli, ["run", "debate", "--topic", "t", "--model", spec],
                               catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text, files = _everything_a_person_or_a_file_sees(runner, result, data_dir)
    assert "Authorization: Bearer [REDACTED] and go" in text
    assert "Bearer xyz" not in text
    assert b"Bearer xyz" not in files


@pytest.mark.parametrize("pieces", [1, 3, 5])
def test_a_key_repeated_in_a_streamed_answer_never_reaches_the_output(pieces, monkeypatch,
                                                                      tmp_path):
    """``dlg run --stream`` printed a streamed answer's pieces as they came: a provider
    that repeats the key (split across pieces, as a stream splits anything) put it on the
    screen and into whatever the output was piped to, though the saved answer had it
    redacted. Pieces are now redacted before anyone sees them, holding back an end that
    may begin a key, and what was held back follows when the answer is complete."""
    pytest.importorskip("langchain_openai")
    import uuid

    key = f"gw-stream-{uuid.uuid4().hex}"
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GATEWAY_CREDENTIAL", key)
    reply = (f"Your key is Bearer {key}, and Authorization: Bearer short1 too; "
             "the rest of the answer follows as it was.")
    with FakeOpenAI(["ok"], reply=reply, pieces=pieces) as server:
        spec = f"openai-compatible:m?base_url={server.base_url}&api_key_env=GATEWAY_CREDENTIAL"
        result = CliRunner().invoke(cli, ["run", "detective", "--topic", "t", "--stream",
                                          "--model", spec], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert key not in result.output and key[:12] not in result.output
    assert "short1" not in result.output
    assert result.output.count("Your key is Bearer [REDACTED], and Authorization: Bearer "
                               "[REDACTED] too; the rest of the answer follows as it "
                               "was.") == 5  # each turn's answer, whole


def test_a_long_streamed_answer_is_redacted_looking_only_at_what_is_held_back():
    """Each piece was redacted with the whole answer so far: a 200,000-character answer in
    10-character pieces took a minute on the event loop. Only what is held back is looked
    at again now, and what is held back stays short, an endless Authorization header too."""
    from dlg.observability.redact import MAX_HELD, StreamRedactor, remember

    remember("sk-held-back-0123456789abcdef")
    redactor = StreamRedactor()
    given = 0
    for _ in range(20_000):
        given += len(redactor.feed("word word "))
        assert len(redactor._held) < 30  # only a possible beginning of the key is held
    assert given + len(redactor.flush()) == 200_000
    redactor.feed("Authorization: Bearer ")
    for _ in range(2_000):
        redactor.feed("x" * 10)
        assert len(redactor._held) <= MAX_HELD
