"""Text from outside dlg (model replies, inputs, error messages) reaches a terminal shown,
never obeyed: control characters made visible, rich markup escaped; files and pipes get
the exact text."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel

import dlg
from dlg.cli import cli
from dlg.observability.logs import JsonFormatter, TextFormatter
from dlg.observability.printable import visible

HOSTILE = "X\x1b]0;PWNED\x07Y\x1b[2J\x9b31m"  # retitle, clear the screen, a C1 CSI


def test_visible_escapes_control_characters_and_keeps_lines():
    assert visible("plain text\n\tindented") == "plain text\n\tindented"
    assert visible(HOSTILE) == "X\\u001b]0;PWNED\\u0007Y\\u001b[2J\\u009b31m"
    assert visible("one\r\ntwo\rover\x7f") == "one\ntwo\\u000dover\\u007f"
    assert visible("a\nb\tc\r", lines=False) == "a\\u000ab\tc\\u000d"


@given(st.text())
def test_visible_leaves_nothing_a_terminal_acts_on_and_json_stays_json(text):
    shown = visible(text)
    assert not any((ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f for c in shown)
    as_json = json.dumps({"reply": text}, ensure_ascii=False)
    assert json.loads(visible(as_json)) == {"reply": text}  # the same value, still JSON


def test_logs_keep_one_record_per_line_and_nothing_a_terminal_acts_on():
    import logging

    message = "boom\nforged line" + HOSTILE
    record = logging.LogRecord("dlg", logging.WARNING, __file__, 1,
                               "fallback after: %s", (message,), None)
    line = TextFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("fallback after: boom\\u000aforged line" + visible(HOSTILE))
    as_json = JsonFormatter().format(record)
    assert visible(as_json, lines=False) == as_json  # no raw control character, C1 included
    assert json.loads(as_json)["message"] == "fallback after: " + message


class _Failing(BaseChatModel):
    """Fails every call, its error quoting a URL path (in rich's markup, a closing tag)."""

    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("HTTP 404 for [/v1/chat/completions]\x1b[2J")


def test_the_live_view_shows_markup_and_escapes_in_errors_and_names_as_text():
    """A '[/...]' in an error message was read by rich as a closing tag and failed the
    display; a role named like markup was styled; escape sequences went to the terminal."""
    from rich.console import Console

    from dlg.cli.display import LiveProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200, color_system=None)
    orchestrator = dlg.Orchestrator(model=_Failing(), store=None)
    mode, dialogue = orchestrator.start(
        {"name": "v", "turns": [{"id": "a", "role": "[bold]Opening[/bold]", "prompt": "hi"}]})
    live = LiveProgress(dialogue, show_text=True, stream=False, parallel=set(),
                        console=console)
    live._same_terminal, live.out = True, console
    orchestrator.observers = (live,)
    with live:
        anyio.run(lambda: orchestrator.execute(mode, dialogue))
    text = screen.getvalue()
    assert dialogue.status == "failed"
    assert "[/v1/chat/completions]\\u001b[2J" in text and "\x1b[2J" not in text
    assert "[bold]Opening[/bold]" in text


def test_output_to_a_pipe_is_exact(tmp_path):
    runner = CliRunner()
    ran = runner.invoke(cli, ["run", "debate", "-m", "echo", "-q", "--topic", HOSTILE])
    assert ran.exit_code == 0, ran.output
    assert HOSTILE in ran.output  # not a terminal: the reply as the model gave it
    listed = runner.invoke(cli, ["ls", "--json"])
    assert json.loads(listed.output)[0]["inputs"]["topic"] == HOSTILE


def _on_a_terminal(args: list[str], env: dict[str, str], code: int = 0) -> bytes:
    """Run ``dlg ARGS`` with stdin, stdout and stderr on a pseudo-terminal, as a user
    would; everything it wrote to the terminal (it must exit with ``code``)."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dlg", *args], stdin=child, stdout=child,
                            stderr=child, env=env, close_fds=True)
    os.close(child)
    out = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=60) == code, bytes(out).decode(errors="replace")
    return bytes(out)


@pytest.mark.slow
def test_a_reply_cannot_drive_the_users_terminal(tmp_path: Path):
    """The echo model repeats the topic, as a model repeats what it read: its escape
    sequences reach the terminal as text, in the run, in `dlg ls` and in `dlg show`."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160",
           "DLG_DATA_DIR": str(tmp_path / "data"), "DLG_CACHE_DIR": str(tmp_path / "c")}
    ran = _on_a_terminal(["run", "debate", "-m", "echo", "--topic", HOSTILE], env)
    listed = _on_a_terminal(["ls"], env)
    piped = subprocess.run([sys.executable, "-m", "dlg", "ls", "--json"], env=env,
                           capture_output=True, text=True, check=True)
    saved = json.loads(piped.stdout)[0]
    assert saved["inputs"]["topic"] == HOSTILE  # saved as given
    shown = _on_a_terminal(["show", saved["id"]], env)
    for out in (ran, listed, shown):
        assert b"\x1b]0;PWNED" not in out and b"\x1b[2J" not in out and b"\xc2\x9b" not in out
        assert visible(HOSTILE).encode() in out


@pytest.mark.slow
@pytest.mark.parametrize("live", [False, True], ids=["plain", "live-view"])
def test_a_closed_output_does_not_stop_the_dialogue(tmp_path, live):
    """`dlg run ... | head`: the reader goes away. That used to cancel the dialogue (exit
    130); a closed output stops only the writing: the dialogue runs on, is saved
    `completed`, and dlg exits 0, with no broken-pipe noise. With stderr on a terminal
    (the live view) too."""
    env = {**os.environ, "DLG_DATA_DIR": str(tmp_path / "data"),
           "DLG_CACHE_DIR": str(tmp_path / "cache"), "TERM": "xterm-256color"}
    env.pop("CI", None)
    args = [sys.executable, "-m", "dlg", "run", "debate", "-m", "echo", "-t", "x"]
    if live:
        main, child = pty.openpty()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=child,
                                text=True)
        os.close(child)
    else:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads: the first turn's text cannot be written
    if live:
        err = _read_all(main)
        proc.wait(timeout=120)
    else:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "Broken pipe" not in err and "Interrupted" not in err
    listed = subprocess_json(["ls", "--json"], env)
    assert [d["status"] for d in listed] == ["completed"]
    saved = subprocess_json(["show", listed[0]["id"], "--json"], env)
    assert {t["status"] for t in saved["turns"]} == {"completed"}


def _read_all(fd: int) -> str:
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    return out.decode(errors="replace")


def test_an_interrupt_in_a_listener_cancels_the_dialogue_after_the_others_ran():
    """A KeyboardInterrupt raised in an observer (Ctrl-C while it ran, or its output
    closed) ends the dialogue `cancelled`, not `failed`; the listeners after it still
    hear the event, as they do when one fails."""
    heard: list[str] = []

    class Interrupting:
        def turn_finished(self, dialogue, turn):
            raise KeyboardInterrupt

    class Listening:
        def turn_finished(self, dialogue, turn):
            heard.append(turn.id)

    orchestrator = dlg.Orchestrator(model="echo", store=None,
                                    observers=[Interrupting(), Listening()])
    mode, dialogue = orchestrator.start("debate", topic="x")
    with pytest.raises(KeyboardInterrupt):
        anyio.run(lambda: orchestrator.execute(mode, dialogue))
    assert dialogue.status == "cancelled" and heard == ["proposition"]
    assert [t.status for t in dialogue.turns[:2]] == ["completed", "pending"]


@pytest.mark.slow
def test_a_binary_export_is_not_written_to_a_terminal(tmp_path: Path):
    """`dlg export ID -f pdf` wrote the PDF's bytes to the terminal; `dlg run -f pdf`
    ran the whole dialogue first. Both refuse, the run before anything runs."""
    env = {**os.environ, "TERM": "xterm-256color", "DLG_DATA_DIR": str(tmp_path / "data"),
           "DLG_CACHE_DIR": str(tmp_path / "c")}
    says = b"the pdf export is binary and would be written to the terminal: give --out FILE"
    ran = _on_a_terminal(["run", "debate", "-m", "echo", "-t", "x", "-f", "pdf"], env, 2)
    assert says in ran
    assert subprocess_json(["ls", "--json"], env) == []  # nothing ran
    d = subprocess_json(["run", "debate", "-m", "echo", "-t", "x", "-f", "json", "-q"], env)
    assert says in _on_a_terminal(["export", d["id"], "-f", "pdf"], env, 2)
    piped = subprocess.run([sys.executable, "-m", "dlg", "export", d["id"], "-f", "pdf"],
                           env=env, capture_output=True, check=True)
    assert piped.stdout.startswith(b"%PDF")  # to a pipe or a file, as before


def subprocess_json(args: list[str], env: dict[str, str]) -> Any:
    done = subprocess.run([sys.executable, "-m", "dlg", *args], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout) if done.stdout.strip() else []
