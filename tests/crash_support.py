"""Support for the crash tests and benchmark: a counting model and a kill-and-resume round.

The ``counting`` model (``counting?latency=0.15&log=FILE``) answers after ``latency``
seconds and appends the prompt's last line starting with ``TURN`` or ``SPLIT`` (else its
last line) to ``log`` just before answering, so the log says how many times each turn's
model was paid for. A ``SPLIT`` prompt is answered with three subtopics, as JSON.
With ``hold=FILE``, the call whose marker is the text of ``FILE`` renames it to
``FILE.held`` and never answers: a kill point that is a turn in flight, hit exactly
(and once: the resumed process finds no ``FILE``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PLUGIN = '''
import json, os, time
from dlg import hookimpl

def _make(name, options):
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Counting(BaseChatModel):
        latency: float = 0.1
        log: str = ""
        hold: str = ""
        dlg_label: str = "counting"

        @property
        def _llm_type(self):
            return "counting"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            lines = str(messages[-1].content).strip().splitlines()
            marked = [x for x in lines if x.startswith(("TURN", "SPLIT"))]
            marker = marked[-1] if marked else lines[-1]
            if self.hold and os.path.exists(self.hold):
                with open(self.hold) as fh:
                    held = fh.read().strip() == marker
                if held:
                    os.replace(self.hold, self.hold + ".held")
                    time.sleep(600)  # in flight until the process is killed
            time.sleep(self.latency)
            with open(self.log, "a") as fh:
                fh.write(marker + "\\n")
                fh.flush()
            text = (json.dumps({"subtopics": ["alpha", "beta", "gamma"]})
                    if marker.startswith("SPLIT") else "answer to " + marker)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(
                content=text,
                usage_metadata={"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}))])

    return Counting(latency=float(options.get("latency", 0.1)), log=str(options["log"]),
                    hold=str(options.get("hold", "")))

@hookimpl
def register_models(register):
    register("counting", _make)
'''

MODE = {
    "name": "crashy",
    "structure": "mixed",
    "phases": [
        {"id": "opening", "turns": [{"id": "a", "role": "A", "prompt": "TURN a"}]},
        {"id": "fan", "structure": "parallel", "turns": [
            {"id": "b", "role": "B", "prompt": "TURN b"},
            {"id": "c", "role": "C", "prompt": "TURN c"},
            {"id": "d", "role": "D", "prompt": "TURN d"}]},
        {"id": "close", "turns": [
            {"id": "e", "role": "E", "prompt": "TURN e"},
            {"id": "f", "role": "F", "prompt": "TURN f"}]},
    ],
}


def install(root: Path) -> dict[str, str]:
    """Write the plugin and mode under ``root``; return the environment to run dlg in."""
    site = root / "site"
    info = site / "dlg_counting-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (site / "dlg_counting.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlg-counting\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[dlg]\ncounting = dlg_counting\n")
    (root / "crashy.json").write_text(json.dumps(MODE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLG_")}
    env.update(PYTHONPATH=str(site), DLG_DATA_DIR=str(root / "data"),
               DLG_CACHE_DIR=str(root / "cache"), DLG_PLUGINS="counting")
    return env


def calls(log: Path) -> list[str]:
    """The turn ids the model was called for, in order ("TURN b" lines -> "b")."""
    if not log.exists():
        return []
    return [line.split()[-1] for line in log.read_text().splitlines() if line.strip()]


def one_round(root: Path, env: dict[str, str], rng: random.Random, latency: float = 0.15
              ) -> dict[str, object]:
    """Run, SIGKILL at a random moment, resume; return what happened."""
    from dlg.records.store import list_dialogues, load_dialogue

    log = root / f"calls-{rng.random():.9f}.log"
    spec = f"counting?latency={latency}&log={log}"
    os.environ["DLG_DATA_DIR"] = env["DLG_DATA_DIR"]
    before = {s["id"] for s in list_dialogues()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlg", "run", str(root / "crashy.json"), "--model", spec, "-q",
         "--no-stream"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill after a random number of turns has completed, at a random moment inside the
    # next one, so that every point of the dialogue gets hit
    target = rng.randint(0, 5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        done = [s["turns_completed"] for s in list_dialogues() if s["id"] not in before]
        if done and done[0] >= target:
            break
        time.sleep(0.005)
    time.sleep(rng.uniform(0, latency))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    new = {s["id"] for s in list_dialogues()} - before
    if not new:
        return {"saved": False}
    (dialogue_id,) = new
    at_kill = load_dialogue(dialogue_id)
    done_at_kill = {t.id for t in at_kill.turns if t.status == "completed"}
    calls_at_kill = calls(log)
    resumed = subprocess.run(
        [sys.executable, "-m", "dlg", "resume", dialogue_id, "-q", "--no-stream"],
        env=env, capture_output=True, text=True, timeout=60)
    final = load_dialogue(dialogue_id)
    after = calls(log)[len(calls_at_kill):]
    return {
        "saved": True,
        "id": dialogue_id,
        "resume_code": resumed.returncode,
        "resume_stderr": resumed.stderr,
        "status": final.status,
        "turn_ids": [t.id for t in final.turns],
        "statuses": {t.id: t.status for t in final.turns},
        "responses": {t.id: t.response for t in final.turns},
        "done_at_kill": done_at_kill,
        "repaid": sorted(t for t in done_at_kill if t in after),
        "calls_after_resume": after,
        "killed_after_finish": at_kill.status == "completed",
    }


TREE_PARENT = {
    "name": "crashtree", "inputs": {"topic": {"required": True}},
    "turns": [
        {"id": "split", "role": "Planner", "prompt": "SPLIT {{ topic }}",
         "output": {"schema": {"type": "object", "required": ["subtopics"], "properties": {
             "subtopics": {"type": "array", "items": {"type": "string"}}}}},
         "spawn": {"mode": "crashchild.json", "concurrency": 2}},
        {"id": "merge", "role": "Merger", "context_from": ["split"],
         "prompt": "TURN merge {% for s in turns.split.subdialogues %}{{ s.item }} {% endfor %}"},
    ]}
TREE_CHILD = {
    "name": "crashchild", "inputs": {"topic": {"required": True}},
    "turns": [{"id": "look", "role": "Look", "prompt": "TURN look {{ topic }}"},
              {"id": "sum", "role": "Sum", "prompt": "TURN sum {{ topic }}"}]}
CHILD_CALLS = [f"TURN {t} {s}" for s in ("alpha", "beta", "gamma") for t in ("look", "sum")]


def install_tree(root: Path) -> dict[str, str]:
    """Like ``install``, with a mode whose first turn spawns three sub-dialogues."""
    env = install(root)
    (root / "crashtree.json").write_text(json.dumps(TREE_PARENT))
    (root / "crashchild.json").write_text(json.dumps(TREE_CHILD))
    return env


def kill_inside_a_child(root: Path, env: dict[str, str], rng: random.Random,
                        latency: float = 0.15) -> dict[str, object]:
    """Run the tree mode, SIGKILL it while its children run, resume the parent."""
    from dlg.records.store import list_dialogues, load_dialogue

    log = root / f"tree-{rng.random():.9f}.log"
    os.environ["DLG_DATA_DIR"] = env["DLG_DATA_DIR"]
    before = {s["id"] for s in list_dialogues()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlg", "run", str(root / "crashtree.json"), "--topic", "t",
         "--model", f"counting?latency={latency}&log={log}", "-q", "--no-stream"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_after(proc, rng.randint(1, 5), rng, latency,  # child turns done before the kill
                lambda: sum(s["turns_completed"] or 0 for s in list_dialogues()
                            if s["id"] not in before and s.get("mode") == "crashchild"))
    new = [s for s in list_dialogues() if s["id"] not in before]
    (parent_id,) = [s["id"] for s in new if s.get("mode") == "crashtree"]
    done_at_kill: set[str] = set()
    for summary in new:
        if summary.get("mode") == "crashchild":
            child = load_dialogue(summary["id"])
            done_at_kill |= {f"TURN {t.id} {child.inputs['topic']}" for t in child.turns
                             if t.status == "completed"}
    at_kill = _lines(log)
    resumed = subprocess.run(
        [sys.executable, "-m", "dlg", "resume", parent_id, "-q", "--no-stream"],
        env=env, capture_output=True, text=True, timeout=60)
    lines = _lines(log)
    return {"parent": load_dialogue(parent_id), "resume_code": resumed.returncode,
            "resume_stderr": resumed.stderr, "done_at_kill": done_at_kill,
            "calls_at_kill": len(at_kill), "lines": lines,
            "after": lines[len(at_kill):]}


def _lines(log: Path) -> list[str]:
    return [x for x in log.read_text().splitlines() if x.strip()] if log.exists() else []


BATCH_MODE = {"name": "crashbatch", "inputs": {"topic": {"required": True}},
              "turns": [{"id": t, "role": t.upper(), "prompt": f"TURN {t} {{{{ topic }}}}"}
                        for t in ("a", "b", "c")]}


def kill_a_batch(root: Path, env: dict[str, str], rng: random.Random, rows: int = 6,
                 latency: float = 0.1) -> dict[str, object]:
    """``dlg batch`` on ``rows`` topics, SIGKILLed part-way; then ``dlg batch --resume``."""
    from dlg.records.store import list_dialogues

    (root / "crashbatch.json").write_text(json.dumps(BATCH_MODE))
    (root / "rows.jsonl").write_text("".join(
        json.dumps({"topic": f"t{i}"}) + "\n" for i in range(rows)))
    log = root / f"batch-{rng.random():.9f}.log"
    batch_id = f"kb{rng.randrange(10**6)}"
    os.environ["DLG_DATA_DIR"] = env["DLG_DATA_DIR"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlg", "batch", str(root / "crashbatch.json"), "--inputs",
         str(root / "rows.jsonl"), "--model", f"counting?latency={latency}&log={log}",
         "--id", batch_id, "-c", "2", "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_after(proc, rng.randint(2, rows * 3 - 4), rng, latency,  # over the whole batch
                lambda: sum(s["turns_completed"] or 0 for s in list_dialogues()
                            if str(s["id"]).startswith(batch_id)))
    from dlg.records.store import load_dialogue

    done_at_kill = {f"TURN {t.id} {d.inputs['topic']}"
                    for s in list_dialogues() if str(s["id"]).startswith(batch_id)
                    for d in [load_dialogue(s["id"])] for t in d.turns
                    if t.status == "completed"}
    at_kill = len(_lines(log))
    resumed = subprocess.run(
        [sys.executable, "-m", "dlg", "batch", "--resume", batch_id, "--json", "-q"],
        env=env, capture_output=True, text=True, timeout=120)
    lines = _lines(log)
    return {"code": resumed.returncode, "stdout": resumed.stdout, "stderr": resumed.stderr,
            "done_at_kill": done_at_kill, "after": lines[at_kill:], "lines": lines}


def _kill_after(proc: subprocess.Popen[bytes], target: int, rng: random.Random,
                latency: float, done: Any) -> None:
    """SIGKILL ``proc`` at a random moment once ``done()`` turns have completed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None and done() < target:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, latency))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


LOOP_MODE = {
    "name": "crashloop", "inputs": {"topic": {"default": "t"}}, "structure": "mixed",
    "phases": [
        {"id": "start", "turns": [{"id": "draft", "role": "Draft",
                                   "prompt": "TURN draft {{ topic }}"}]},
        {"id": "improve", "repeat": {"max_rounds": 3}, "turns": [
            {"id": "review", "role": "Review", "prompt": "TURN review {{ topic }} {{ round }}"},
            {"id": "revise", "role": "Revise",
             "prompt": "TURN revise {{ topic }} {{ round }}"}]},
        {"id": "fan", "repeat": {"max_rounds": 2}, "structure": "parallel", "turns": [
            {"id": "left", "role": "Left", "prompt": "TURN left {{ topic }} {{ round }}"},
            {"id": "right", "role": "Right",
             "prompt": "TURN right {{ topic }} {{ round }}"}]},
        {"id": "end", "turns": [{"id": "final", "role": "Final", "context_from": ["revise"],
                                 "prompt": "TURN final {{ topic }} from {{ turns.revise }}"}]},
    ]}
# every call the loop mode pays for, in the order its turns run (the parallel phase's
# two turns in either order); the record's turn ids in the order they run
LOOP_CALLS = (["TURN draft t"]
              + [f"TURN {t} t {n}" for n in (1, 2, 3) for t in ("review", "revise")]
              + [f"TURN {t} t {n}" for n in (1, 2) for t in ("left", "right")]
              + ["TURN final t from answer to TURN revise t 3"])
LOOP_TURNS = (["draft"] + [f"{t}{'' if n == 1 else f'@{n}'}" for n in (1, 2, 3)
                           for t in ("review", "revise")]
              + [f"{t}{'' if n == 1 else f'@{n}'}" for n in (1, 2) for t in ("left", "right")]
              + ["final"])
# a parent whose turn spawns a sub-dialogue per subtopic, each running the loop mode
LOOP_TREE = {
    "name": "crashlooptree", "inputs": {"topic": {"required": True}},
    "turns": [
        {"id": "split", "role": "Planner", "prompt": "SPLIT {{ topic }}",
         "output": {"schema": TREE_PARENT["turns"][0]["output"]["schema"]},
         "spawn": {"mode": "crashloop.json", "concurrency": 1}},
        {"id": "merge", "role": "Merger", "context_from": ["split"],
         "prompt": "TURN merge {% for s in turns.split.subdialogues %}{{ s.item }} "
                   "{% endfor %}"}]}


def install_loops(root: Path) -> dict[str, str]:
    """Like ``install``, with the loop mode and a tree whose children run it."""
    env = install(root)
    (root / "crashloop.json").write_text(json.dumps(LOOP_MODE))
    (root / "crashlooptree.json").write_text(json.dumps(LOOP_TREE))
    return env


def kill_in_flight(root: Path, env: dict[str, str], mode: str, marker: str,
                   args: tuple[str, ...] = (), done: int = 0, spawning: int = 0,
                   latency: float = 0.02) -> dict[str, Any]:
    """Run ``mode`` in a process, SIGKILL it while the call for ``marker`` is in flight,
    at least ``done`` calls were paid for and every call paid for is saved (completed,
    or for ``spawning`` turns waiting for their sub-dialogues, answered), then
    ``dlg resume`` it; return the calls paid for and the records."""
    from dlg.records.store import interrupted, list_dialogues, load_dialogue, open_store

    tag = marker.replace(" ", "_")
    log, hold = root / f"calls-{mode}-{tag}.log", root / f"hold-{mode}-{tag}"
    hold.write_text(marker)
    os.environ["DLG_DATA_DIR"] = env["DLG_DATA_DIR"]
    before = {s["id"] for s in list_dialogues()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlg", "run", str(root / f"{mode}.json"), *args,
         "--model", f"counting?latency={latency}&log={log}&hold={hold}", "-q",
         "--no-stream"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    held = Path(f"{hold}.held")

    def saved() -> int:
        return sum(s["turns_completed"] or 0 for s in list_dialogues()
                   if s["id"] not in before)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not (
            held.exists() and saved() + spawning >= len(_lines(log)) >= done):
        time.sleep(0.01)
    store = open_store()

    def listed() -> dict[str, str]:  # as `dlg ls` lists them: id -> status
        return {s["id"]: s["status"] for s in interrupted(store, store.list())
                if s["id"] not in before}

    running = listed()
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert held.exists(), f"'{marker}' never ran: {stderr.decode()[-2000:]}"
    killed = listed()
    new = [s for s in list_dialogues() if s["id"] not in before]
    (top,) = [s["id"] for s in new if not s.get("parent")]
    at_kill = {s["id"]: load_dialogue(s["id"]) for s in new}
    paid_before = _lines(log)
    resumed = subprocess.run(
        [sys.executable, "-m", "dlg", "resume", top, "-q", "--no-stream"],
        env=env, capture_output=True, text=True, timeout=120)
    lines = _lines(log)
    return {"id": top, "resume_code": resumed.returncode, "resume_stderr": resumed.stderr,
            "at_kill": at_kill, "final": load_dialogue(top), "before": paid_before,
            "listed_running": running, "listed_killed": killed,
            "after": lines[len(paid_before):], "lines": lines}
