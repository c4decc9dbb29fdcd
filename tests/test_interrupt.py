"""Ctrl-C during ``dlg run``, in a real process: it says at once that it is stopping and
stops promptly, a second Ctrl-C quits at once, and an answer that arrives while it stops
is kept, so ``dlg resume`` does not pay for it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .crash_support import install

# a turn long enough to be interrupted: up to 512 tokens, some seconds on 2 cores
LONG = {"name": "long", "settings": {"max_tokens": 512, "seed": 7},
        "turns": [{"id": "essay", "role": "Writer",
                   "prompt": "Write a long essay about the history of the sea, in detail."},
                  {"id": "more", "role": "Writer", "prompt": "Go on."}]}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLG_")}
    env.update(DLG_DATA_DIR=str(tmp_path / "data"), DLG_CACHE_DIR=str(tmp_path / "cache"),
               DLG_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def _ctrl_c_as_on_a_terminal() -> None:
    """In the child: Ctrl-C's default action, which a shell's background job (the test
    run's) would otherwise pass down ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _dlg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dlg", *args], env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=_ctrl_c_as_on_a_terminal)


def _saved(dialogue_id: str, env: dict[str, str]) -> dict[str, Any]:
    return json.loads(_dlg("show", dialogue_id, "--json", env=env).stdout)


class _Running:
    """``dlg run`` in a process of its own, its stderr read line by line."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "dlg", *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=_ctrl_c_as_on_a_terminal)
        self.lines: list[str] = []

    def until(self, start: str) -> str:
        """Read stderr up to a line starting with ``start``."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith(start):
                return line
        raise AssertionError("".join(self.lines))

    def finish(self, timeout: float) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        assert self.proc.stderr is not None
        self.lines.append(self.proc.stderr.read())
        self.proc.stderr.close()
        return code, "".join(self.lines)

    def dialogue_id(self) -> str:
        header = next(x for x in self.lines if x.startswith("dlg: "))
        return header.split("dialogue ")[1].strip()


async def test_no_turn_starts_once_a_stop_is_asked_for_and_resume_goes_on():
    """The kernel's side of Ctrl-C, in process: ``Interrupt.request()`` (here by an
    observer, as the first turn finishes) stops the dialogue as its own ``until`` would,
    `cancelled` with its turns left pending; continuing it runs the rest."""
    import dlg
    from dlg.running.interrupt import Interrupt

    interrupt = Interrupt()

    class AsksToStop:
        def turn_finished(self, dialogue: Any, turn: Any) -> None:
            interrupt.request()

    orchestrator = dlg.Orchestrator(model="echo", store=None, observers=[AsksToStop()])
    orchestrator.interrupt = interrupt
    mode, dialogue = orchestrator.start("debate", topic="x")
    await orchestrator.execute(mode, dialogue)
    assert dialogue.status == "cancelled"
    assert dialogue.metadata["stopped"]["reason"] == "interrupted"
    assert [t.status for t in dialogue.turns] == ["completed"] + ["pending"] * 5
    again = dlg.Orchestrator(model="echo", store=None)
    await again.execute(mode, dialogue)
    assert dialogue.status == "completed" and "stopped" not in dialogue.metadata


@pytest.mark.slow
@pytest.mark.local_model
def test_ctrl_c_stops_a_local_turn_at_once_and_says_so(tmp_path: Path):
    """Exit took 16.9 s with nothing printed: the thread running llama.cpp ran its answer
    to the end first. Now generation stops at the next token."""
    (tmp_path / "long.json").write_text(json.dumps(LONG))
    env = _env(tmp_path)
    run = _Running(["run", str(tmp_path / "long.json"), "-m", "local", "--no-stream"], env)
    run.until("▶ [1/2]")
    time.sleep(0.5)  # well inside the turn
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    said = run.until("Stopping")
    told = time.monotonic() - sent
    code, err = run.finish(timeout=15)
    took = time.monotonic() - sent
    print(f"\nCtrl-C to 'Stopping': {told:.2f}s; to exit: {took:.2f}s")
    assert "Ctrl-C again" in said
    assert code == 130, err
    assert "Traceback" not in err
    assert f"`dlg resume {run.dialogue_id()}` continues it" in err
    saved = _saved(run.dialogue_id(), env)
    assert saved["status"] == "cancelled"
    assert [t["status"] for t in saved["turns"]] == ["cancelled", "pending"]


# a model that sends this very process Ctrl-C as it answers: the answer arrives while
# dlg stops
RACING = '''
import os, signal, time
from dlg import hookimpl

def _make(name, options):
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Racing(BaseChatModel):
        log: str = ""
        dlg_label: str = "racing"

        @property
        def _llm_type(self):
            return "racing"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            prompt = str(messages[-1].content).strip().splitlines()[-1]  # its own line
            with open(self.log, "a") as fh:
                fh.write(prompt + "\\n")
            if prompt == "second":
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, just as the answer comes
            if prompt == "stuck":
                time.sleep(120)  # a thread nothing can stop: the process waits for it
            return ChatResult(generations=[ChatGeneration(message=AIMessage(
                content="answer to " + prompt,
                usage_metadata={"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}))])

    return Racing(log=str(options["log"]))

@hookimpl
def register_models(register):
    register("racing", _make)
'''

THREE = {"name": "three", "turns": [{"id": t, "role": t.title(), "prompt": t}
                                   for t in ("first", "second", "third")]}


@pytest.mark.slow
def test_an_answer_that_arrives_while_stopping_is_kept_and_not_paid_again(tmp_path: Path):
    env = _racing(tmp_path)
    (tmp_path / "three.json").write_text(json.dumps(THREE))
    log = tmp_path / "calls.log"
    ran = _dlg("run", str(tmp_path / "three.json"), "-m", f"racing?log={log}",
               "--no-stream", env=env)
    assert ran.returncode == 130, ran.stderr
    assert "Stopping" in ran.stderr and "Traceback" not in ran.stderr
    dialogue_id = ran.stderr.split("dlg resume ")[1].split("`")[0]
    saved = _saved(dialogue_id, env)
    assert saved["status"] == "cancelled"
    assert [t["status"] for t in saved["turns"]] == ["completed", "completed", "pending"]
    assert saved["turns"][1]["response"] == "answer to second"
    resumed = _dlg("resume", dialogue_id, "-q", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert log.read_text().splitlines() == ["first", "second", "third"]  # none twice
    assert _saved(dialogue_id, env)["status"] == "completed"


def _racing(tmp_path: Path) -> dict[str, str]:
    env = install(tmp_path)  # a plugin folder on PYTHONPATH
    (tmp_path / "site" / "dlg_counting.py").write_text(RACING)
    (tmp_path / "site" / "dlg_counting-0.dist-info" / "entry_points.txt").write_text(
        "[dlg]\nracing = dlg_counting\n")
    env["DLG_PLUGINS"] = "racing"
    return env


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once(tmp_path: Path):
    """A model's thread that nothing stops holds the process as it ends (Python waits
    for its threads); a second Ctrl-C quits at once all the same."""
    env = _racing(tmp_path)
    stuck = {"name": "stuck", "turns": [{"id": "a", "role": "A", "prompt": "stuck"}]}
    (tmp_path / "stuck.json").write_text(json.dumps(stuck))
    run = _Running(["run", str(tmp_path / "stuck.json"), "-m",
                    f"racing?log={tmp_path / 'calls.log'}", "--no-stream"], env)
    run.until("▶ [1/1]")
    run.proc.send_signal(signal.SIGINT)
    run.until("Interrupted; `dlg resume")  # saved; the thread still sleeps
    assert run.proc.poll() is None
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish(timeout=15)
    assert code == 130, err
    assert "Traceback" not in err
    assert f"Quit at once; `dlg resume {run.dialogue_id()}` continues from its last " \
           "save." in err
    assert _saved(run.dialogue_id(), env)["status"] == "cancelled"
