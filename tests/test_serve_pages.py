"""``dlg serve``'s batch and routing pages: ``/b`` and ``/b/ID`` (progress, each row
linking to its dialogue, totals, live over server-sent events from a real ``dlg serve``)
and ``/routing`` (what the learned router learned, as inline SVG, and the ratings'
history), on a real SQLite store; hostile names and inputs shown as text."""

from __future__ import annotations

import os
import re

import pytest

import dlg

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from dlg.records.store import open_store
from dlg.running.routing.learning import record_quality
from dlg.serve.app import create_app
from dlg.serve.security import Csrf
from tests.asgi_support import follow

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ONE_TURN = {"name": "solo", "inputs": {"topic": {"type": "string"}},
            "turns": [{"id": "a", "role": "Judge", "prompt": "{{ topic }}"}]}


def client(**kw) -> TestClient:
    return TestClient(create_app(None, **kw), base_url="http://127.0.0.1")


def main(page) -> str:
    assert page.status_code == 200, page.text
    return page.text.split("<main>", 1)[1]


# the batch pages ----------------------------------------------------------------------

def test_the_batches_list_and_a_batch_page_show_progress_rows_and_totals():
    rows = [{"topic": HOSTILE}, {"topic": "trains"}, {"topic": "boats"}]
    dlg.batch_sync(ONE_TURN, rows, model="echo", batch_id="bt")
    open_store(None).delete("bt-00002")  # a row not run yet: pending
    listed = main(client().get("/b"))
    assert '<a href="/b/bt">bt</a>' in listed and "<td>solo</td>" in listed
    assert re.search(r'<td class="num">2</td>\s*<td class="num">0</td>\s*'
                     r'<td class="num">0</td>\s*<td class="num">1</td>', listed)
    page = main(client().get("/b/bt"))
    assert ('<b class="done">2</b> done · <b class="running">0</b> running · '
            '<b class="failed">0</b> failed or stopped · <b class="pending">1</b> pending, '
            'of 3 rows') in page
    assert '<a href="/d/bt-00000">bt-00000</a>' in page
    assert "<td>bt-00002</td>" in page  # nothing saved for it: no link
    assert "<b>dialogues</b> 3" in page and "<b>waiting on rate limits</b> 0.00s" in page
    assert "<b>model time</b>" in page and "<b>tokens</b>" in page
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)" in page  # the row's input, as text
    # the nav reaches it from every page
    assert '<a href="/b">batches</a>' in client().get("/").text
    gone = client().get("/b/nosuch")
    assert gone.status_code == 404 and "no saved batch &#39;nosuch&#39;" in gone.text


def test_no_batch_saved_says_so_and_a_lone_dialogue_is_no_batch():
    dlg.run_sync(ONE_TURN, {"topic": "x"}, model="echo")
    assert "No batch is saved here" in main(client().get("/b"))


@pytest.mark.parametrize("kind", ["sqlite", "diskcache"])
def test_the_batches_list_reads_headers_not_rows(kind, tmp_path, monkeypatch):
    """``/b`` lists a batch of 5,000 rows with nothing saved yet (all pending) beside a run
    one, and reads no batch's record (its rows) and no dialogue to do it."""
    monkeypatch.setenv("DLG_STORE", kind)
    store = open_store(None, path=str(tmp_path / kind))
    dlg.batch_sync(ONE_TURN, [{"topic": "cars"}, {"topic": "trains"}], model="echo",
                   batch_id="small", store=store)
    store.save_batch({"id": "big", "mode_name": "solo", "created_at": 2e9,
                      "rows": [{"topic": str(i)} for i in range(5000)]})
    calls: list[str] = []

    class Spy:
        def __getattr__(self, name):
            value = getattr(store, name)
            if not callable(value):
                return value

            def spy(*args, **kwargs):
                calls.append(name)
                return value(*args, **kwargs)
            return spy

    page = main(TestClient(create_app(Spy()), base_url="http://127.0.0.1").get("/b"))
    assert '<a href="/b/big">big</a>' in page and '<a href="/b/small">small</a>' in page
    assert page.index("/b/big") < page.index("/b/small")  # newest first
    assert '<td class="num">5000</td>' in page  # its rows, all pending
    assert "load_batch" not in calls and "load" not in calls and "batches" not in calls
    assert "batch_headers" in calls


def test_a_batch_s_waiting_on_rate_limits_is_counted_from_its_turns():
    from dlg.serve.batches import rate_limit_wait

    dialogue = dlg.run_sync(ONE_TURN, {"topic": "x"}, model="echo")
    dialogue.turns[0].attempts = [{"model": "m", "error": "429", "transient": True,
                                   "waited": 1.5, "rate_limited": True},
                                  {"model": "m", "error": "500", "transient": True,
                                   "waited": 2.0}]
    assert rate_limit_wait(dialogue) == 1.5  # a turn saved before turns kept their wait
    dialogue.turns[0].waited_seconds = 2.25  # paced and after its 429: its own record
    assert rate_limit_wait(dialogue) == 2.25


@pytest.mark.slow
def test_a_batch_page_updates_live_as_rows_finish(tmp_path):
    """A real ``dlg serve``: its batch's events send the page again when a row that was
    pending is run by another process (here, this one) and end once every row ended."""
    import httpx

    from tests import browser_support as bs

    rows = [{"topic": "cars"}, {"topic": "trains"}]
    dlg.batch_sync(ONE_TURN, rows, model="echo", batch_id="live")
    open_store(None).delete("live-00001")
    port = bs.free_port()
    server = bs.serve(dict(os.environ), port)
    try:
        events: list[tuple[str, str]] = []
        with httpx.stream("GET", f"http://127.0.0.1:{port}/b/live/events",
                          timeout=bs.WAIT) as response:
            name, data = "", []
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif not line and name:
                    events.append((name, "\n".join(data)))
                    name, data = "", []
                    if len(events) == 1:  # the page as it is: then the last row runs
                        dlg.batch_sync(ONE_TURN, rows, model="echo", batch_id="live")
                    if events[-1][0] == "end":
                        break
    finally:
        server.kill()  # the process this test started, by its id
        server.wait()
        server.stderr.close()
    assert [e[0] for e in events] == ["update", "update", "end"]
    assert '<b class="pending">1</b> pending' in events[0][1]
    assert '<b class="done">2</b> done' in events[1][1]
    assert '<a href="/d/live-00001">live-00001</a>' in events[1][1]


# the routing page ------------------------------------------------------------------

def test_a_hundred_open_routing_pages_share_one_reader_and_hold_no_stream_slot():
    """100 routing streams open at once (past the 64 slots the other pages' streams
    share) each get the page, from reads of the store shared by all of them: at most one
    per ``EVERY`` seconds since they opened, not one per stream."""
    import anyio

    from dlg.serve import live

    record_quality(open_store(None), "debate", "echo", 0.7)
    app = create_app(None)
    page = next(r.endpoint.__self__ for r in app.routes
                if getattr(r, "path", "") == "/routing/events")
    statuses: list[int] = []
    updated: list[bool] = []
    seen: dict[str, float] = {}

    async def main() -> None:
        answered = anyio.Event()

        async def stream() -> None:
            async def send(message):
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])
                    if message["status"] != 200:
                        updated.append(False)
                elif b"event: update" in message.get("body", b"") and len(updated) < 100:
                    updated.append(True)
                if len(updated) == 100:
                    answered.set()

            await follow(app, "/routing/events", send)

        async with anyio.create_task_group() as tasks:
            started = anyio.current_time()
            for _ in range(100):
                tasks.start_soon(stream)
            await answered.wait()
            seen["elapsed"] = anyio.current_time() - started
            shared = getattr(page, "shared", None)
            seen["reads"] = shared.reads if shared is not None else -1
            seen["following"] = shared.following if shared is not None else -1
            seen["slots"] = page.viewer.streams
            tasks.cancel_scope.cancel()

    anyio.run(main)
    assert statuses == [200] * 100 and all(updated)
    assert seen["slots"] == 0 and seen["following"] == 100
    assert 1 <= seen["reads"] <= 1 + seen["elapsed"] / live.EVERY
    assert seen["reads"] < 100


async def test_a_routing_stream_opened_after_its_page_never_sends_an_older_snapshot():
    """The page is rendered from the store; its stream then takes the shared snapshot. A
    snapshot read before the stream opened (for pages opened earlier) is older than the
    page: sending it took the page back to "nothing learned" until the next read."""
    import anyio

    from dlg.serve import live

    state = {"now": "old"}
    reads = []

    def read() -> live.Snapshot:
        reads.append(state["now"])
        return live.Snapshot(state["now"], f"<p>{state['now']}</p>", done=False)

    shared = live.Shared(read, every=60.0)
    assert (await shared()).fingerprint == "old"  # an earlier page's stream
    state["now"] = "new"  # a rating; then this page is rendered from the store
    await anyio.sleep(0.01)
    sent = [e async for e in live.follow(shared, every=0.05, lasting=0.3, since="new")]
    assert not any("old" in e for e in sent), sent
    assert reads == ["old", "new"]  # read again once for the new stream, then shared


def test_the_routing_page_says_when_nothing_is_learned_yet():
    page = main(client().get("/routing"))
    assert "Nothing learned yet" in page and "No rating recorded yet" in page
    assert "<svg" not in page


def test_a_rating_on_a_dialogue_page_shows_on_the_routing_page():
    saved = dlg.run_sync(ONE_TURN, {"topic": "x"}, model="echo")
    csrf = Csrf(b"k" * 32)
    c = client(csrf=csrf)
    rated = c.post(f"/d/{saved.id}/rate", data={"turn": "a", "score": "7",
                                                "csrf": csrf.token(f"rate:{saved.id}")},
                   follow_redirects=False)
    assert rated.status_code == 303
    page = main(c.get("/routing"))
    assert "<h2>judge</h2>" in page
    assert re.search(r'<td class="model">echo</td><td class="num">1</td>'
                     r'<td class="num">0.700</td>', page)
    assert '<svg class="plot quality"' in page and '<circle class="mean"' in page
    history = page.split("Ratings, newest first", 1)[1]
    assert f'<a href="/d/{saved.id}#turn-a">{saved.id} · a</a>' in history
    assert "<td>judge</td><td class=\"model\">echo</td><td class=\"num\">7</td><td>user</td>" \
        in history
    # `dlg rate` keeps its history the same way; the newest is listed first
    dlg.Orchestrator().rate(saved.id, "a", 3)
    history = main(c.get("/routing")).split("Ratings, newest first", 1)[1]
    assert re.findall(r'<td class="num">(\d+)</td><td>user</td>', history) == ["3", "7"]


def test_a_hostile_model_name_and_task_are_text_and_a_model_s_options_are_not_shown():
    store = open_store(None)
    record_quality(store, HOSTILE, HOSTILE + "?api_key=sk-secret", 7)
    record_quality(store, "writer", "openai:gpt-4o-mini", 9)  # priced: on the scatter
    page = main(client().get("/routing"))
    assert "<script>" not in page and "<img" not in page and "sk-secret" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert '<svg class="plot scatter"' in page
    assert re.search(r"<title>openai:gpt-4o-mini · writer: \$[\d.]+/M, mean 0.900, n=1</title>",
                     page)
    assert "Without a price in the registry (not plotted)" in page


def test_the_quality_interval_is_the_mean_s_95_percent_interval_clipped():
    from dlg.serve.routing_page import interval

    assert interval(1, 0.7, 0.5) == (0.0, 1.0)
    lo, hi = interval(100, 0.5, 0.1)
    assert (lo, hi) == (pytest.approx(0.4804), pytest.approx(0.5196))


def test_each_pair_keeps_its_latest_scores_only():
    from dlg.running.routing.learning import HISTORY, rating_history, routing_stats

    store = open_store(None)
    for i in range(HISTORY + 5):
        record_quality(store, "writer", "echo", i % 11)
    kept = rating_history(store)
    assert len(kept) == HISTORY
    assert [e["score"] for e in kept[:2]] == [1.0, pytest.approx(0.9)]  # scores 54 % 11, 53 % 11
    assert routing_stats(store)["writer"]["echo"].n == HISTORY + 5  # the statistics: all


def test_a_row_saved_running_whose_process_is_gone_is_interrupted():
    dlg.batch_sync(ONE_TURN, [{"topic": "cars"}, {"topic": "trains"}], model="echo",
                   batch_id="dead")
    store = open_store(None)
    record = store.load("dead-00001")
    store.save({**record, "status": "running"})  # as a SIGKILLed process leaves it: no lease
    page = main(client().get("/b/dead"))
    assert '<tr class="status-interrupted" id="row-2">' in page
    assert '<b class="failed">1</b> failed or stopped' in page
    assert 'id="batch-state">ended</span>' in page  # nothing running: its stream ends
