"""One process at a time runs a dialogue: `dlg resume` of a running one is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anyio
import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli
from dlg.records.store import DialogueBusyError, Lease

pytestmark = pytest.mark.slow


def _start_slow_run(tmp_path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DLG_DATA_DIR": os.environ["DLG_DATA_DIR"]}
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlg", "run", "debate", "--topic", "t", "--model",
             "echo?latency=1.5", "--quiet", "--no-stream"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        saved = dlg.list_dialogues()
        if saved:
            return proc, saved[0]["id"]
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise AssertionError("the run saved nothing: " + log.read_text())


def test_a_running_dialogue_is_not_deleted_until_its_process_dies(tmp_path):
    """`dlg rm` of a dialogue another process runs would leave its next save writing a
    half dialogue back; it is refused, and nothing is deleted."""
    from dlg.records.store import delete_dialogue

    proc, dialogue_id = _start_slow_run(tmp_path)
    try:
        result = CliRunner().invoke(cli, ["rm", dialogue_id])
        assert result.exit_code == 1
        assert f"Error: dialogue {dialogue_id} is running in another process (pid " \
               f"{proc.pid} on " in result.stderr
        assert result.stderr.rstrip().endswith("; nothing of it was deleted")
        assert dlg.load_dialogue(dialogue_id).id == dialogue_id
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert delete_dialogue(dialogue_id) == [dialogue_id]
    with pytest.raises(dlg.DialogueNotFoundError):
        dlg.load_dialogue(dialogue_id)


def test_resume_of_a_running_dialogue_is_refused_until_its_process_dies(tmp_path):
    proc, dialogue_id = _start_slow_run(tmp_path)
    try:
        result = CliRunner().invoke(cli, ["resume", dialogue_id, "--quiet"])
        assert result.exit_code == 1
        assert f"Error: dialogue {dialogue_id} is running in another process (pid " \
               f"{proc.pid} on " in result.output
        assert "would run and pay for its turns twice" in result.output
        with pytest.raises(DialogueBusyError):
            anyio.run(lambda: dlg.resume(dialogue_id))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = anyio.run(lambda: dlg.resume(dialogue_id, model="echo"))
    assert resumed.status == "completed"
    # the finished resume let go of the dialogue: a second resume is allowed
    again = anyio.run(lambda: dlg.resume(dialogue_id, model="echo"))
    assert again.status == "completed"


def test_a_lease_from_another_host_holds_until_it_expires():
    lease = {"token": "t", "host": "elsewhere.invalid", "pid": 1, "expires": time.time() + 60}
    assert Lease.is_live(lease)
    assert not Lease.is_live({**lease, "expires": time.time() - 1})
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not Lease.is_live({**lease, "host": socket.gethostname(), "pid": dead.pid})
    assert Lease.is_live({**lease, "host": socket.gethostname(), "pid": os.getpid()})


def test_resume_never_sends_a_redacted_key(monkeypatch):
    """A key given in the spec is not saved; resume runs the spec without it, so the
    provider's key variable applies, or says how to give the key."""
    mode = {"name": "k", "participants": {"p": {}},
            "turns": [{"id": "a", "role": "A", "participant": "p", "prompt": "hi"},
                      {"id": "b", "role": "B", "participant": "p", "prompt": "again"}]}
    from dlg import Decision, hookimpl

    class StopAfterFirst:
        @hookimpl
        def before_turn(self, turn):
            return Decision.stop("paused") if turn.id == "b" else None

    pm = dlg.get_plugin_manager()
    pm.register(StopAfterFirst(), name="pause")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = "openai:gpt-4o-mini?api_key=sk-given-in-the-spec-0123456789"
    # the first turn runs on echo standing in for openai: the spec is what gets saved
    d = dlg.run_sync(mode, participants={"p": "echo"})
    from dlg.records.store import open_store

    saved_store = open_store()
    record = saved_store.load(d.id)
    record["participants"] = {"p": spec.replace("sk-given-in-the-spec-0123456789",
                                                "[REDACTED]")}
    saved_store.save(record)
    pm.unregister(name="pause")
    result = CliRunner().invoke(cli, ["resume", d.id, "--quiet"])
    assert result.exit_code == 2
    assert "participant 'p' ran on 'openai:gpt-4o-mini?api_key=[REDACTED]', which cannot " \
           "run now (a key given in the spec is never saved)" in result.output
    assert "api_key=env:VARIABLE" in result.output
    # with the key in the environment the stripped spec is used, never '[REDACTED]'
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-0123456789")
    orchestrator = dlg.Orchestrator(store=None)
    orchestrator.prepare_resume(d.id)
    assert orchestrator.models == {"p": "openai:gpt-4o-mini"}


def test_secret_references_are_saved_and_resolved(monkeypatch):
    from dlg import hookimpl
    from dlg.errors import ModelError
    from dlg.models import resolve_secrets

    monkeypatch.setenv("MY_KEY", "sk-resolved-0123456789")
    monkeypatch.setenv("PROXY_PW", "pw-0123456789")
    assert resolve_secrets({"api_key": "env:MY_KEY",
                            "base_url": "http://me:${PROXY_PW}@proxy/v1", "n": 2}) == {
        "api_key": "sk-resolved-0123456789", "base_url": "http://me:pw-0123456789@proxy/v1",
        "n": 2}
    with pytest.raises(ModelError, match="names the environment variable NOPE, which is "
                                         "not set"):
        resolve_secrets({"api_key": "env:NOPE"})
    seen = []

    class Keyed:
        @hookimpl
        def register_models(self, register):
            def make(name, options):
                from dlg.plugins.echo_model import EchoChatModel

                seen.append(options)
                return EchoChatModel()

            register("keyed", make)

    dlg.get_plugin_manager().register(Keyed(), name="keyed")
    d = dlg.run_sync({"name": "e", "turns": [{"id": "a", "role": "A", "prompt": "hi"}]},
                     model="keyed?token=env:MY_KEY")
    assert seen == [{"token": "sk-resolved-0123456789"}]  # the model got the secret
    assert d.turns[0].model == "keyed?token=env:MY_KEY"  # the record keeps the reference


def test_ls_lists_a_killed_dialogue_as_interrupted_with_the_command_that_continues_it(
        tmp_path):
    """`dlg ls` listed a dialogue whose process was SIGKILLed as `running` for ever; the
    lease says whether a live process holds it."""
    import json

    def row(output: str, dialogue_id: str) -> str:
        return next(line for line in output.splitlines() if line.startswith(dialogue_id))

    proc, dialogue_id = _start_slow_run(tmp_path)
    try:
        listed = CliRunner().invoke(cli, ["ls"])
        assert listed.exit_code == 0, listed.output
        assert "  debate          running    " in row(listed.output, dialogue_id)
        assert "dlg resume" not in listed.output
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert dlg.load_dialogue(dialogue_id).status == "running"  # as it was saved
    listed = CliRunner().invoke(cli, ["ls"])
    assert "  debate          interrupted " in row(listed.output, dialogue_id)
    assert listed.output.endswith(
        f"\n\n{dialogue_id} was interrupted (the process running it is gone): "
        f"`dlg resume {dialogue_id}` continues it\n")
    shown = CliRunner().invoke(cli, ["show", dialogue_id]).output
    assert shown.startswith(f"{dialogue_id} · debate · interrupted\n")
    assert shown.endswith("interrupted (the process running it is gone): "
                          f"`dlg resume {dialogue_id}` continues it\n")
    as_json = json.loads(CliRunner().invoke(cli, ["ls", "--json"]).output)
    assert [r["status"] for r in as_json if r["id"] == dialogue_id] == ["interrupted"]
    resumed = CliRunner().invoke(cli, ["resume", dialogue_id, "-m", "echo", "-q",
                                       "--no-stream"])
    assert resumed.exit_code == 0, resumed.output
    listed = CliRunner().invoke(cli, ["ls"])
    assert "  debate          completed " in row(listed.output, dialogue_id)
    assert "interrupted" not in listed.output


@pytest.mark.parametrize("name", ["sqlite", "diskcache"])
def test_a_running_dialogue_no_live_process_holds_is_listed_interrupted(name):
    import socket

    from dlg.records.store import interrupted, open_store

    store = open_store(name)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = {"token": "t", "host": socket.gethostname(), "expires": time.time() + 60}
    assert store.acquire("live", {**here, "pid": os.getpid()}, Lease.is_live) is None
    assert store.acquire("dead", {**here, "pid": dead.pid}, Lease.is_live) is None
    rows = [{"id": i, "status": "running"} for i in ("live", "dead", "none")]
    rows.append({"id": "done", "status": "completed"})
    assert [r["status"] for r in interrupted(store, rows)] == [
        "running", "interrupted", "interrupted", "completed"]
    assert interrupted(object(), rows) == rows  # a store without leases cannot tell


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads a process's state in /proc")
def test_a_killed_process_its_parent_has_not_reaped_holds_nothing():
    """A Ray worker killed with SIGKILL stays a zombie until the raylet collects it: its
    lease read as live, so the dialogue it ran could not be marked interrupted."""
    from dlg import process

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lease = {"host": process.host(), "pid": proc.pid, "expires": time.time() + 900}
        assert Lease.is_live(lease)
        os.kill(proc.pid, signal.SIGKILL)
        for _ in range(600):  # until the kernel says it ended; not reaped: no wait()
            with open(f"/proc/{proc.pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.05)
        assert not Lease.is_live(lease)
    finally:
        proc.kill()
        proc.wait()
