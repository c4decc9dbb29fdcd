"""``dlg serve``'s dialogue page and list, through Starlette's TestClient on a real SQLite
store: the timeline (parallel turns in one row, loop rounds labelled), the sub-dialogue
tree, the budget; resume and delete from the page (CSRF, refused while a real process
holds the dialogue, refused when read-only); the list's filters by model, batch and date."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import dlg

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from dlg.records.store import open_store
from dlg.serve.app import create_app
from dlg.serve.security import Csrf
from tests.browser_support import wait_for

TWO_TURNS = {"name": "pair", "inputs": {"topic": {"type": "string"}},
             "turns": [{"id": "a", "role": "A", "prompt": "{{ topic }}"},
                       {"id": "b", "role": "B", "prompt": "more on {{ topic }}"}]}
LOOP = {"name": "loop", "structure": "mixed", "phases": [{
    "id": "p", "repeat": {"max_rounds": 9, "until": {"condition": "round >= 2"}},
    "structure": "parallel",
    "turns": [{"id": "x", "role": "X", "prompt": "x{{ round }}"},
              {"id": "y", "role": "Y", "prompt": "y{{ round }}"}]}]}
# holds a dialogue as a running process does (its lease), until it is killed
HOLD = """
import sys
from dlg.records.store import Lease, open_store
Lease().acquire(open_store(None), sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""
CSRF = Csrf(b"t" * 32)


def client(**kw) -> TestClient:
    return TestClient(create_app(None, csrf=CSRF, **kw), base_url="http://127.0.0.1")


def interrupted(mode: dict | None = None, model: str | None = "echo") -> dlg.Dialogue:
    """A saved dialogue whose second turn did not finish (as after a crash)."""
    d = dlg.run_sync(mode or TWO_TURNS, {"topic": "tabs"}, model=model)
    store = open_store(None)
    record = store.load(d.id)
    record["status"] = "failed"
    record["turns"][1].update(status="failed", response=None, error="boom")
    store.save(record)
    return d


def held(dialogue_id: str) -> bool:
    """Whether a live process (this one, resuming it in a viewer) holds the dialogue."""
    from dlg.records.store import DialogueBusyError, Lease

    try:
        Lease().check(open_store(None), dialogue_id)
    except DialogueBusyError:
        return True
    return False


@contextmanager
def held_elsewhere(dialogue_id: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real process holding the dialogue's lease until it is killed (SIGKILL frees
    it at once); killed and reaped at the end whatever happened."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, dialogue_id],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()


def status_of(dialogue_id: str) -> str:
    return dlg.load_dialogue(dialogue_id).status


def test_the_timeline_puts_parallel_turns_in_one_row_and_labels_loop_rounds():
    panel = dlg.run_sync("panel", {"topic": "x"}, model="echo?latency=0.2")
    page = client().get(f"/d/{panel.id}").text
    svg = page.split('<svg class="timeline"', 1)[1].split("</svg>", 1)[0]
    rows = re.findall(r'<g class="row( parallel)?" data-phase="(\w+)" data-round="1">(.*?)</g>',
                      svg, re.S)
    found = {phase: (bool(parallel), re.findall(r'data-turn="(\w+)"', body))
             for parallel, phase, body in rows}
    assert found == {"experts": (True, ["technical", "ethical", "economic"]),
                     "summary": (False, ["synthesis"])}
    # side by side: one lane each, at different heights in the row
    ys = re.findall(r'data-turn="(?:technical|ethical|economic)" x="[\d.]+" y="([\d.]+)"', svg)
    assert len(set(ys)) == 3
    assert "experts (parallel)</text>" in svg

    looped = dlg.run_sync(LOOP, model="echo")
    page = client().get(f"/d/{looped.id}").text
    assert re.findall(r'<h2 class="round">([^<]*)</h2>', page) == ["p · round 1", "p · round 2"]
    assert 'data-phase="p" data-round="2">\n<text class="label" x="0" y="' in page
    assert ">p · round 2 (parallel)</text>" in page


def test_the_page_links_the_sub_dialogue_tree_and_shows_the_budget(tmp_path):
    from tests.subdialogue_support import CHILD, PARENT, Tree

    (tmp_path / "tree.yaml").write_text(PARENT)
    (tmp_path / "explore.yaml").write_text(CHILD)
    d = dlg.Orchestrator(model=Tree(calls=[])).run_sync(tmp_path / "tree.yaml", topic="t")
    c = client()
    page = c.get(f"/d/{d.id}").text
    children = [child.id for child in dlg.load_dialogue(d.id).subdialogues]
    assert len(children) == 3
    for child in children:
        assert (f'<a href="/d/{child}">{child}</a> · explore · '
                '<span class="status status-completed">completed</span>') in page
    assert f'A sub-dialogue of <a href="/d/{d.id}">{d.id}</a>' in c.get(
        f"/d/{children[0]}").text
    # an unpriced model under a limit: stopped before it ran, its budget shown as a meter
    limited = dlg.run_sync(TWO_TURNS, {"topic": "x"}, model="echo", max_cost=0.5)
    page = c.get(f"/d/{limited.id}").text
    assert re.search(r'<li id="budget"><b>budget</b> <meter min="0" max="0.50*" '
                     r'value="0\.0+">0%</meter> \$0\.00000 spent of \$0\.5 \(0%\)', page)


def test_resume_needs_the_csrf_token_then_runs_in_the_viewer():
    d = interrupted()
    with client() as c:
        page = c.get(f"/d/{d.id}").text
        assert 'action="/d/' + d.id + '/resume"' in page
        refused = c.post(f"/d/{d.id}/resume", data={})
        assert refused.status_code == 403 and "CSRF" in refused.text
        forged = c.post(f"/d/{d.id}/resume", data={"csrf": CSRF.token(f"delete:{d.id}")})
        assert forged.status_code == 403
        assert status_of(d.id) == "failed"
        token = re.search(r'/resume" class="resume">\s*<input type="hidden" name="csrf" '
                          r'value="(\w+)"', page)[1]
        resumed = c.post(f"/d/{d.id}/resume", data={"csrf": token}, follow_redirects=False)
        assert resumed.status_code == 303
        assert resumed.headers["location"] == f"/d/{d.id}?did=resumed"
        wait_for(lambda: status_of(d.id) == "completed", "the resumed dialogue completed")
        done = dlg.load_dialogue(d.id)
        assert done.turn("b").response == "echo: more on tabs"
        page = c.get(resumed.headers["location"]).text
        assert "Resumed here" in page and 'action="/d/' + d.id + '/resume"' not in page
        again = c.post(f"/d/{d.id}/resume", data={"csrf": token}, follow_redirects=False)
        assert again.headers["location"] == f"/d/{d.id}?did=complete"


def test_resume_and_delete_are_refused_while_another_process_holds_the_dialogue():
    d = interrupted()
    with held_elsewhere(d.id) as holder, client() as c:
        busy = c.post(f"/d/{d.id}/resume", data={"csrf": CSRF.token(f"resume:{d.id}")})
        assert busy.status_code == 409
        assert (f"dialogue {d.id} is running in another process (pid {holder.pid} on "
                in busy.text)
        kept = c.post(f"/d/{d.id}/delete", data={"csrf": CSRF.token(f"delete:{d.id}")})
        assert kept.status_code == 409 and "nothing of it was deleted" in kept.text
        assert status_of(d.id) == "failed"  # neither ran nor deleted
        holder.kill()  # SIGKILL: the lease of a process gone is free at once
        holder.wait()
        freed = c.post(f"/d/{d.id}/resume", data={"csrf": CSRF.token(f"resume:{d.id}")},
                       follow_redirects=False)
        assert freed.status_code == 303
        wait_for(lambda: status_of(d.id) == "completed", "the resumed dialogue completed")


def test_delete_asks_first_then_removes_it_with_its_sub_dialogues(tmp_path):
    from tests.subdialogue_support import CHILD, PARENT, Tree

    (tmp_path / "tree.yaml").write_text(PARENT)
    (tmp_path / "explore.yaml").write_text(CHILD)
    d = dlg.Orchestrator(model=Tree(calls=[])).run_sync(tmp_path / "tree.yaml", topic="t")
    other = dlg.run_sync(TWO_TURNS, {"topic": "kept"}, model="echo")
    c = client()
    page = c.get(f"/d/{d.id}").text
    assert f'href="/d/{d.id}/delete"' in page
    ask = c.get(f"/d/{d.id}/delete")
    assert ask.status_code == 200 and "with the 3 sub-dialogues it spawned" in ask.text
    assert "this cannot be undone" in ask.text
    assert c.post(f"/d/{d.id}/delete", data={}).status_code == 403
    assert status_of(d.id) == "completed"
    token = re.search(r'name="csrf" value="(\w+)"', ask.text)[1]
    gone = c.post(f"/d/{d.id}/delete", data={"csrf": token}, follow_redirects=False)
    assert gone.status_code == 303
    listed = c.get(gone.headers["location"]).text
    assert f"Deleted {d.id} and 3 sub-dialogues." in listed
    assert [r["id"] for r in dlg.list_dialogues()] == [other.id]
    assert c.get(f"/d/{d.id}").status_code == 404


def test_a_read_only_viewer_offers_and_allows_no_change():
    d = interrupted()
    with client(read_only=True) as c:
        page = c.get(f"/d/{d.id}").text
        assert "/resume" not in page and "/delete" not in page and "/rate" not in page
        for path, action in [("resume", "resume"), ("delete", "delete"), ("rate", "rate")]:
            refused = c.post(f"/d/{d.id}/{path}", data={
                "csrf": CSRF.token(f"{action}:{d.id}"), "turn": "a", "score": "5"})
            assert refused.status_code == 403 and "--read-only" in refused.text
        assert c.get(f"/d/{d.id}/delete").status_code == 403
    assert status_of(d.id) == "failed"


def test_the_list_filters_by_model_batch_and_date():
    plain = dlg.run_sync(TWO_TURNS, {"topic": "one"}, model="echo")
    other = dlg.run_sync(TWO_TURNS, {"topic": "two"}, model="echo?latency=0.001")
    result = dlg.batch_sync(TWO_TURNS, [{"topic": "r1"}, {"topic": "r2"}], model="echo")
    rows = [item.dialogue_id for item in result.items]
    c = client()
    page = c.get("/").text
    assert f'<option value="{result.id}">{result.id}</option>' in page
    assert '<option value="echo">echo</option>' in page
    # a sub-dialogue whose id looks like a row of the batch is none of its rows
    store = open_store(None)
    sub = f"{result.id}-00007"
    store.save({**store.load(plain.id), "id": sub,
                "metadata": {"parent": {"id": plain.id, "depth": 1}}})
    by_batch = c.get("/", params={"batch": result.id}).text
    assert all(r in by_batch for r in rows) and plain.id not in by_batch
    assert sub not in by_batch
    assert f'data-events="/events?batch={result.id}"' in by_batch  # the URL keeps them
    assert "latency" not in c.get("/").text  # a model's options: not shown
    assert other.id in c.get("/", params={"model": "echo"}).text
    assert "No saved dialogue matches" in c.get("/", params={"model": "openai:gpt-4o"}).text

    today = datetime.datetime.now(datetime.UTC).date()
    day = datetime.timedelta(days=1)
    assert plain.id in c.get("/", params={"from": str(today), "to": str(today)}).text
    later = c.get("/", params={"from": str(today + day)}).text
    assert "No saved dialogue matches" in later
    assert f'name="from" value="{today + day}"' in later
    assert "No saved dialogue matches" in c.get("/", params={"to": str(today - day)}).text
    for bad, message in [({"from": "2026-13-01"}, "?from=&#39;2026-13-01&#39; is not a date: "
                          "give one as YYYY-MM-DD"),
                         ({"to": "yesterday"}, "?to=&#39;yesterday&#39; is not a date"),
                         ({"from": "2026-02-02", "to": "2026-02-01"},
                          "the dates run backwards: from 2026-02-02 is after to 2026-02-01")]:
        page = c.get("/", params=bad)
        assert page.status_code == 400 and message in page.text, page.text
        assert "Traceback" not in page.text
        assert c.get("/events", params=bad).status_code == 400


def test_a_summary_names_the_models_its_turns_ran_on_without_options():
    d = dlg.run_sync(TWO_TURNS, {"topic": "x"}, model="echo?latency=0.001")
    (row,) = [r for r in dlg.list_dialogues() if r["id"] == d.id]
    assert row["models"] == ["echo"]
    assert "turn_models" not in open_store(None).load(d.id)


def test_dlg_serve_read_only_makes_a_read_only_viewer(monkeypatch):
    import uvicorn
    from click.testing import CliRunner

    from dlg.cli import cli

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    result = CliRunner().invoke(cli, ["serve", "--read-only"])
    assert result.exit_code == 0, result.output
    d = interrupted()
    viewer = TestClient(served["app"], base_url="http://127.0.0.1")
    refused = viewer.post(f"/d/{d.id}/delete", data={})
    assert refused.status_code == 403 and "started with --read-only" in refused.text


class OldStore:
    """The default store as one saved by a dlg before summaries named their models:
    ``list()`` without ``models``; each ``load`` counted."""

    def __init__(self):
        self.store, self.loads = open_store(None), 0

    def list(self):
        return [{k: v for k, v in r.items() if k != "models"} for r in self.store.list()]

    def load(self, dialogue_id):
        self.loads += 1
        return self.store.load(dialogue_id)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_the_model_filter_reads_an_old_record_once_not_at_every_refresh():
    for topic in ("a", "b", "c"):
        dlg.run_sync(TWO_TURNS, {"topic": topic}, model="echo")
    old = OldStore()
    c = TestClient(create_app(old, csrf=CSRF), base_url="http://127.0.0.1")
    first = c.get("/", params={"model": "echo"}).text
    assert first.count('<td class="models">echo</td>') == 3
    assert old.loads == 3
    for _ in range(3):  # the live list reads the store again every half second
        assert c.get("/", params={"model": "echo"}).text == first
    assert old.loads == 3
    dlg.run_sync(TWO_TURNS, {"topic": "d"}, model="echo")  # a new one: read once
    assert c.get("/", params={"model": "echo"}).text.count('<td class="models">') == 4
    assert old.loads == 4


def test_notices_name_only_what_this_viewer_did():
    """``?deleted=`` and ``?rated=`` come from the address: a link of another site could
    make the page say anything ("Deleted everything. Your store is damaged: ...")."""
    d = dlg.run_sync(TWO_TURNS, {"topic": "x"}, model="echo")
    c = client()
    spoof = "everything. Your store is damaged: see evil.example to repair it"
    listed = c.get("/", params={"deleted": spoof}).text
    assert 'id="deleted"' not in listed and "evil.example" not in listed
    assert 'id="deleted"' not in c.get("/", params={"deleted": d.id}).text  # not deleted
    page = c.get(f"/d/{d.id}", params={"rated": spoof}).text
    assert 'id="rated"' not in page and "evil.example" not in page
    assert "Your rating of turn b was recorded" in c.get(f"/d/{d.id}?rated=b").text
    assert 'id="notice"' not in c.get(f"/d/{d.id}?did={spoof}").text


@pytest.fixture
def slow_start(monkeypatch):
    """An interrupted dialogue, and an event: a run resuming it starts (takes its lease)
    only once the event is set, as with a busy thread pool or a slow store."""
    import threading

    import anyio

    d = interrupted()
    gate = threading.Event()
    execute = dlg.Orchestrator.execute

    async def slow(self, mode, dialogue, **kw):
        while not gate.is_set():  # cancelled when the viewer stops
            await anyio.sleep(0.01)
        return await execute(self, mode, dialogue, **kw)

    monkeypatch.setattr(dlg.Orchestrator, "execute", slow)
    yield d, gate
    gate.set()


def test_delete_is_refused_while_this_viewer_resumes_the_dialogue(slow_start):
    """Between the resume's checks and its run taking the dialogue's lease, a delete
    would go through, and the run would then save the deleted dialogue again."""
    d, gate = slow_start
    with client() as c:
        started = c.post(f"/d/{d.id}/resume", data={"csrf": CSRF.token(f"resume:{d.id}")},
                         follow_redirects=False)
        assert started.status_code == 303
        kept = c.post(f"/d/{d.id}/delete", data={"csrf": CSRF.token(f"delete:{d.id}")})
        gate.set()
        assert kept.status_code == 409 and "being resumed by this viewer" in kept.text
        assert "nothing of it was deleted" in kept.text
        wait_for(lambda: status_of(d.id) == "completed", "the resumed dialogue completed")


@pytest.mark.parametrize("headers", [{"sec-fetch-site": "cross-site"},
                                     {"sec-fetch-site": "same-site"},
                                     {"origin": "http://evil.example"},
                                     {"origin": "null"}])
def test_a_form_posted_from_another_site_is_refused_even_with_its_token(headers):
    d = interrupted()
    c = client()
    token = CSRF.token(f"delete:{d.id}")
    refused = c.post(f"/d/{d.id}/delete", data={"csrf": token}, headers=headers)
    assert refused.status_code == 403 and "a page of another site" in refused.text
    assert status_of(d.id) == "failed"
    # this viewer's own page: the browser says so
    same = {"sec-fetch-site": "same-origin", "origin": "http://evil.example"} \
        if "sec-fetch-site" in headers else {"origin": "http://127.0.0.1"}
    gone = c.post(f"/d/{d.id}/delete", data={"csrf": token}, headers=same,
                  follow_redirects=False)
    assert gone.status_code == 303


def test_a_failed_resume_or_store_shows_no_secret(monkeypatch):
    """A store's error may name its URL with the password; a provider's, the key it got."""
    from dlg.errors import StoreError

    secret = "hunter2-" + "s3cr3t" * 4
    monkeypatch.setenv("DLG_TEST_PASSWORD", secret)
    failure = f"could not connect to postgresql://dlg:{secret}@db.internal/dlg"
    d = interrupted()

    async def failing(self, mode, dialogue, **kw):
        raise StoreError(failure)

    monkeypatch.setattr(dlg.Orchestrator, "execute", failing)
    with client() as c:
        started = c.post(f"/d/{d.id}/resume", data={"csrf": CSRF.token(f"resume:{d.id}")})
        assert started.status_code == 200
        page = wait_for(lambda: (p := c.get(f"/d/{d.id}").text) and "resuming it failed" in p
                        and p, "the failed resume shown")
        assert "could not connect to postgresql://dlg:" in page and secret not in page

    class Broken(OldStore):
        def load(self, dialogue_id):
            raise StoreError(failure)

    shown = TestClient(create_app(Broken()), base_url="http://127.0.0.1").get(f"/d/{d.id}")
    assert shown.status_code == 500 and "could not connect" in shown.text
    assert secret not in shown.text
def test_hostile_names_in_the_timeline_and_filters_stay_text():
    d = dlg.run_sync(TWO_TURNS, {"topic": "x"}, model="echo")
    store = open_store(None)
    record = store.load(d.id)
    evil = '</svg><script>alert(1)</script>"\' onload="alert(2)\x00\x1b[2J' + "x" * 5000
    record["mode"] = evil
    for turn in record["turns"]:
        turn.update(phase=evil, model=f"echo{evil}", participant=evil, role=evil)
        turn.setdefault("metadata", {})["routing"] = {"router": evil, "reason": evil}
    store.save(record)
    page = client().get(f"/d/{d.id}")
    assert page.status_code == 200
    for text in (page.text, client().get("/", params={"q": evil[:200], "mode": evil}).text):
        body = text.split("<main>", 1)[1]
        assert "<script>" not in body and 'onload="' not in body
        assert text.count("</svg>") == text.count("<svg")
    svg = page.text.split('<svg class="timeline"', 1)[1].split("</svg>", 1)[0]
    assert "&lt;/svg&gt;&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39; onload=&#34;" in svg


def test_a_viewer_stopped_mid_resume_leaves_the_dialogue_saved_to_resume_again():
    d = interrupted()
    store = open_store(None)
    record = store.load(d.id)
    record["metadata"]["model"] = "echo?latency=60"  # turn b runs until the viewer stops
    store.save(record)
    with client() as c:
        started = c.post(f"/d/{d.id}/resume", data={"csrf": CSRF.token(f"resume:{d.id}")},
                         follow_redirects=False)
        assert started.headers["location"] == f"/d/{d.id}?did=resumed"
        wait_for(lambda: held(d.id), "the dialogue running in the viewer (its lease taken)")
    saved = dlg.load_dialogue(d.id)  # the viewer has stopped: its lifespan ended
    assert (saved.status, saved.turn("b").status) == ("cancelled", "cancelled")
    assert not held(d.id)
    assert saved.turn("a").response == "echo: tabs"
    _, again = dlg.Orchestrator().prepare_resume(d.id)  # its lease let go: resumable
    assert again.turn("a").status == "completed" and again.turn("b").status == "pending"


@pytest.mark.parametrize("phase", [None, 5])
def test_a_record_whose_phase_is_not_text_still_has_its_page(phase):
    d = dlg.run_sync(TWO_TURNS, {"topic": "x"}, model="echo")
    store = open_store(None)
    record = store.load(d.id)
    record["turns"][0]["phase"] = phase
    store.save(record)
    page = client().get(f"/d/{d.id}")
    assert page.status_code == 200 and '<svg class="timeline"' in page.text
    assert f'<text class="label" x="0" y="12.0">{phase}</text>' in page.text


def test_a_dialogue_this_viewer_resumes_reads_running_before_its_run_has_started(slow_start):
    d, gate = slow_start
    with client() as c:
        c.post(f"/d/{d.id}/resume", data={"csrf": CSRF.token(f"resume:{d.id}")})
        page = c.get(f"/d/{d.id}").text
        assert 'id="status">running</span>' in page and 'id="resume"' not in page
        gate.set()
        wait_for(lambda: status_of(d.id) == "completed", "the resumed dialogue completed")


# resume's options (`dlg resume --model --max-cost --force`) ----------------------------

def _resume(c: TestClient, dialogue_id: str, **options: str):
    return c.post(f"/d/{dialogue_id}/resume", follow_redirects=False,
                  data={"csrf": CSRF.token(f"resume:{dialogue_id}"), **options})


def test_the_resume_form_offers_model_max_cost_and_force_with_a_warning():
    d = interrupted()
    page = client().get(f"/d/{d.id}").text
    form = page.split('/resume" class="resume">', 1)[1].split("</form>", 1)[0]
    assert 'name="model"' in form and 'name="max_cost"' in form
    assert 'type="checkbox" name="force" value="1"' in form
    assert "Forcing keeps the completed turns" in form and "its lease is live" in form


def test_resume_runs_the_remaining_turns_on_the_model_given_under_the_max_cost_given(
        monkeypatch):
    d = interrupted()
    store = open_store(None)
    record = store.load(d.id)  # its model cannot run here: without --model it cannot go on
    record["metadata"]["model"] = "nosuch:gone"
    store.save(record)
    monkeypatch.setenv("DLG_MODEL", "nosuch:gone")  # nor can the default
    with client() as c:
        assert _resume(c, d.id).status_code == 303
        wait_for(lambda: "resuming it failed" in c.get(f"/d/{d.id}").text and not held(d.id),
                 "the resume on its own model failed")
        assert status_of(d.id) != "completed"
        resumed = _resume(c, d.id, model="echo", max_cost="2.5")
        assert resumed.status_code == 303, resumed.text
        wait_for(lambda: status_of(d.id) != "failed" and not held(d.id),
                 "the resumed dialogue ended")
    done = dlg.load_dialogue(d.id)
    assert done.turn("b").model == "echo"
    assert done.metadata["budget"]["max_cost"] == 2.5  # the limit given on the page


@pytest.mark.parametrize(("options", "said"), [
    ({"max_cost": "abc"}, "the max cost must be a number of dollars, not &#39;abc&#39;"),
    ({"max_cost": "-1"}, "the max cost must be a finite number of dollars more than 0"),
    ({"max_cost": "nan"}, "the max cost must be a finite number of dollars more than 0"),
    # cut to 40 characters it read 0 (or another number than the one typed)
    ({"max_cost": "0." + "0" * 38 + "1"}, "the max cost is a number of dollars of at most 40"),
    ({"model": "echo x"}, "the model must be a model spec such as openai:gpt-4o-mini"),
    ({"model": "openai:gpt-4o?base_url=http://evil.example"},
     "the model is named here without options"),
    ({"model": "nosuch:model"}, "&#39;nosuch:model&#39; is not a known model"),
    ({"force": "yes"}, "force is a checkbox (1 or nothing), not &#39;yes&#39;"),
    ({"participants": "writer"}, "a participant is given as ALIAS=SPEC"),
    ({"participants": "writer="}, "not &#39;writer=&#39;"),
    ({"participants": "<script>=echo"}, "not &#39;&lt;script&gt;=echo&#39;"),
    ({"participants": "w=echo w=echo"}, "participant &#39;w&#39; is given twice"),
    ({"participants": "w=openai:gpt-4o?base_url=http://evil.example"},
     "the model of participant &#39;w&#39; is named here without options"),
    ({"participants": "w=nosuch:model"}, "&#39;nosuch:model&#39; is not a known model"),
    ({"participants": " ".join(["w=echo"] * 21)}, "at most 20 ALIAS=SPEC pairs"),
    ({"router": "nosuch"}, "&#39;nosuch&#39; is not a known router"),
    ({"router": "learned?exploration=1"}, "the router is named here without options"),
    ({"router": "$(touch x)"}, "the router is a name as `dlg plugins` lists them"),
    # a file of the server's, or its standard input: never read on a page's say
    ({"mode": "/etc/passwd"}, "the mode is a name as `dlg modes list` shows them"),
    ({"mode": "../modes/pair"}, "not &#39;../modes/pair&#39;"),
    ({"mode": "pair.yaml"}, "not a file, which `dlg resume --mode` takes"),
    ({"mode": "-"}, "the mode is a name as `dlg modes list` shows them"),
    ({"mode": "x" * 101}, "at most 100 characters"),
])
def test_bad_resume_options_are_a_400_page_saying_which_and_nothing_runs(options, said):
    d = interrupted()
    with client() as c:
        bad = _resume(c, d.id, **options)
        assert bad.status_code == 400 and said in bad.text, bad.text
        assert f"dialogue {d.id} was not resumed" in bad.text
        assert "evil.example" not in bad.text.split("<main>", 1)[-1].split("was not", 1)[0]
        assert status_of(d.id) == "failed" and not held(d.id)
        assert _resume(c, d.id).status_code == 303  # not left marked as resuming
        wait_for(lambda: status_of(d.id) == "completed", "the resumed dialogue completed")


def test_force_resumes_a_changed_mode_but_never_one_a_live_process_holds():
    d = interrupted()
    store = open_store(None)
    changed = {**TWO_TURNS, "turns": [*TWO_TURNS["turns"],
                                      {"id": "c", "role": "C", "prompt": "last on {{ topic }}"}]}
    # its mode changed since: the document kept is not the one its content hash names
    store.save({**store.load(d.id), "mode_hash": "0" * 64, "mode_document": changed})
    with held_elsewhere(d.id) as holder, client() as c:
        busy = _resume(c, d.id, force="1")
        assert busy.status_code == 409 and "is running in another process" in busy.text
        holder.kill()  # SIGKILL: its lease is stale now
        holder.wait()
        unforced = _resume(c, d.id)
        assert unforced.status_code == 400 and "pass --force" in unforced.text
        forced = _resume(c, d.id, force="1")
        assert forced.status_code == 303, forced.text
        wait_for(lambda: status_of(d.id) == "completed", "the forced resume completed")
    assert [t.id for t in dlg.load_dialogue(d.id).turns] == ["a", "b", "c"]


# resume's --participant, --router and --mode -----------------------------------------

PARTS = {"name": "parts", "inputs": {"topic": {"type": "string"}},
         "participants": {"writer": "echo"},
         "turns": [{"id": "a", "role": "A", "participant": "writer", "prompt": "{{ topic }}"},
                   {"id": "b", "role": "B", "participant": "writer",
                    "prompt": "more on {{ topic }}"}]}


def test_the_resume_form_offers_participants_router_and_mode():
    d = interrupted()
    page = client().get(f"/d/{d.id}").text
    form = page.split('/resume" class="resume">', 1)[1].split("</form>", 1)[0]
    for name in ("participants", "router", "mode"):
        assert f'name="{name}"' in form
    assert "<code>--participant</code>" in form and "not a file" in form


def test_resume_binds_the_participants_given_and_refuses_an_alias_the_mode_lacks():
    d = interrupted(PARTS, model=None)
    store = open_store(None)
    record = store.load(d.id)  # its participant's model cannot run here any more
    record["participants"] = {"writer": "nosuch:gone"}
    store.save(record)
    with client() as c:
        gone = _resume(c, d.id)
        assert gone.status_code == 400 and "nosuch:gone" in gone.text, gone.text
        stranger = _resume(c, d.id, participants="writer=echo wirter=echo")
        assert stranger.status_code == 400, stranger.text
        assert ("&#39;wirter&#39; is not a participant of mode &#39;parts&#39; (its "
                "participants: writer)") in stranger.text
        assert not held(d.id) and status_of(d.id) == "failed"
        bound = _resume(c, d.id, participants="writer=echo")
        assert bound.status_code == 303, bound.text
        wait_for(lambda: status_of(d.id) == "completed" and not held(d.id),
                 "the resumed dialogue completed")
    assert dlg.load_dialogue(d.id).turn("b").model == "echo"


def test_resume_routes_the_remaining_turns_with_the_router_given(pm):
    from tests.routing_support import FixedRouterPlugin

    pm.register(FixedRouterPlugin(), name="fixed-router")
    d = interrupted()
    with client() as c:
        assert _resume(c, d.id, router="fixed").status_code == 303
        wait_for(lambda: status_of(d.id) == "completed" and not held(d.id),
                 "the resumed dialogue completed")
    done = dlg.load_dialogue(d.id)
    assert (done.turn("a").model, done.turn("b").model) == ("echo", "echo?words=1")


def test_resume_continues_with_the_same_mode_known_here_by_another_name(pm):
    """The mode it ran, registered here under another name (as after a move): the same
    mode, so no force is needed."""
    from dlg import hookimpl

    class Plugin:
        @hookimpl
        def register_modes(self, register):
            register("pair-here", TWO_TURNS)

    pm.register(Plugin(), name="pair-modes")
    d = interrupted()
    with client() as c:
        assert _resume(c, d.id, mode="pair-here").status_code == 303
        wait_for(lambda: status_of(d.id) == "completed" and not held(d.id),
                 "the resumed dialogue completed")
    assert [t.id for t in dlg.load_dialogue(d.id).turns] == ["a", "b"]


def test_resume_continues_with_the_mode_named_the_same_unless_forced(pm):
    """The mode it ran is known here by another name (as after a move); a changed one
    needs force; an unknown name is refused, and nothing runs."""
    from dlg import hookimpl

    grown = {**TWO_TURNS, "turns": [*TWO_TURNS["turns"],
                                    {"id": "c", "role": "C", "prompt": "last"}]}

    class Plugin:
        @hookimpl
        def register_modes(self, register):
            register("pair-here", TWO_TURNS)
            register("pair-grown", grown)

    pm.register(Plugin(), name="pair-modes")
    d = interrupted()
    with client() as c:
        unknown = _resume(c, d.id, mode="pair-gone")
        assert unknown.status_code == 400, unknown.text
        assert "&#39;pair-gone&#39; is not a known mode" in unknown.text
        changed = _resume(c, d.id, mode="pair-grown")
        assert changed.status_code == 400 and "pass --force" in changed.text, changed.text
        assert not held(d.id) and status_of(d.id) == "failed"
        forced = _resume(c, d.id, mode="pair-grown", force="1")
        assert forced.status_code == 303, forced.text
        wait_for(lambda: status_of(d.id) == "completed" and not held(d.id),
                 "the forced resume completed")
    assert [t.id for t in dlg.load_dialogue(d.id).turns] == ["a", "b", "c"]
