"""``dlg serve``'s routes, through Starlette's TestClient on a real SQLite store: the list
and its filters, a dialogue's page (a hostile answer shown as text), its export, live
updates, rating (refused without its CSRF token) and the access token."""

from __future__ import annotations

import re

import pytest

import dlg

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from dlg.serve.app import create_app
from dlg.serve.security import Csrf, is_local
from tests.asgi_support import follow

HOSTILE = ('<script>alert("x")</script> <img src=x onerror=alert(1)> '
           '[click](javascript:alert(1))')
ONE_TURN = {"name": "solo", "inputs": {"topic": {"type": "string"}},
            "turns": [{"id": "a", "role": "Judge", "prompt": "{{ topic }}"}]}


def client(**kw) -> TestClient:
    return TestClient(create_app(None, **kw), base_url="http://127.0.0.1")


@pytest.fixture
def saved() -> dlg.Dialogue:
    return dlg.run_sync(ONE_TURN, {"topic": HOSTILE}, model="echo")


def test_the_list_shows_saved_dialogues_and_filters_them(saved):
    other = dlg.run_sync("debate", {"topic": "tabs or spaces"}, model="echo")
    page = client().get("/")
    assert page.status_code == 200
    assert saved.id in page.text and other.id in page.text
    assert "<script>alert" not in page.text  # the topic is escaped here too
    assert "&lt;script&gt;alert" in page.text
    by_mode = client().get("/", params={"mode": "debate"}).text
    assert other.id in by_mode and saved.id not in by_mode
    by_text = client().get("/", params={"q": "TABS"}).text
    assert other.id in by_text and saved.id not in by_text
    assert "No saved dialogue matches" in client().get("/", params={"status": "failed"}).text


def test_a_hostile_answer_is_shown_as_text_never_run(saved):
    page = client().get(f"/d/{saved.id}")
    assert page.status_code == 200
    body = page.text.split("<main>", 1)[1]
    assert "<script>" not in body and "<img" not in body and 'href="javascript' not in body
    answer = body.split('<div class="answer">', 1)[1].split("</div>", 1)[0]
    assert answer == ("<p>echo: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &lt;img src=x "
                      "onerror=alert(1)&gt; [click](javascript:alert(1))</p>\n")
    # no script but the viewer's own, even if some markup got through
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_a_dialogue_page_shows_each_turn_and_links_exports(saved):
    page = client().get(f"/d/{saved.id}").text
    slow = dlg.run_sync(ONE_TURN, {"topic": "x"}, model="echo?latency=0.01")
    assert "latency=" not in client().get(f"/d/{slow.id}").text  # a model's options: not shown
    assert 'id="turn-a"' in page and "role <b>Judge</b>" in page
    assert 'model <b class="model">echo</b>' in page
    assert f'/d/{saved.id}/export/markdown"' in page
    export = client().get(f"/d/{saved.id}/export/markdown")
    assert export.status_code == 200 and export.text == saved.export("markdown")
    assert 'filename="' + saved.id + '.md"' in export.headers["content-disposition"]
    missing = client().get(f"/d/{saved.id}/export/nosuch")
    assert missing.status_code == 404 and "not a known export format" in missing.text
    gone = client().get("/d/nosuch")
    assert gone.status_code == 404 and "no saved dialogue &#39;nosuch&#39;" in gone.text


def test_the_events_of_an_ended_dialogue_send_it_once_then_end(saved):
    with client().stream("GET", f"/d/{saved.id}/events") as response:
        text = "".join(response.iter_text())
    assert response.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"^event: (\w+)$", text, re.M)
    assert events == ["update", "end"]
    assert "&lt;script&gt;" in text and "<script>" not in text


def test_rating_a_turn_needs_the_csrf_token_and_goes_where_dlg_rate_puts_it(saved):
    csrf = Csrf(b"k" * 32)
    c = client(csrf=csrf)
    refused = c.post(f"/d/{saved.id}/rate", data={"turn": "a", "score": "7"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = c.post(f"/d/{saved.id}/rate",
                    data={"turn": "a", "score": "7", "csrf": Csrf().token(f"rate:{saved.id}")})
    assert forged.status_code == 403
    assert dlg.Orchestrator().routing_stats() == {}
    token = re.search(r'name="csrf" value="(\w+)"', c.get(f"/d/{saved.id}").text)[1]
    assert token == csrf.token(f"rate:{saved.id}")
    rated = c.post(f"/d/{saved.id}/rate", data={"turn": "a", "score": "7", "csrf": token},
                   follow_redirects=False)
    assert rated.status_code == 303 and rated.headers["location"].endswith("?rated=a#turn-a")
    stat = dlg.Orchestrator().routing_stats()["judge"]["echo"]
    assert (stat.n, stat.mean) == (1, pytest.approx(0.7))
    assert "Your rating of turn a was recorded" in c.get(rated.headers["location"]).text
    bad = c.post(f"/d/{saved.id}/rate", data={"turn": "a", "score": "11", "csrf": token})
    assert bad.status_code == 400 and "a quality score is from 0 to 10" in bad.text
    nan = c.post(f"/d/{saved.id}/rate", data={"turn": "a", "score": "nan", "csrf": token})
    assert nan.status_code == 400


def test_a_viewer_over_a_store_object_rates_and_resumes_in_that_store(tmp_path):
    """Given a store object (not a name), ratings land in it, not in the default store."""
    from dlg.plugins.sqlite_store import SqliteStore
    from dlg.running.routing.learning import routing_stats

    store = SqliteStore(tmp_path / "mine.db")  # DLG_DATA_DIR (the default) is elsewhere
    saved = dlg.run_sync(ONE_TURN, {"topic": "x"}, model="echo", store=store)
    csrf = Csrf(b"k" * 32)
    c = TestClient(create_app(store, csrf=csrf), base_url="http://127.0.0.1")
    assert c.get(f"/d/{saved.id}").status_code == 200
    rated = c.post(f"/d/{saved.id}/rate", follow_redirects=False,
                   data={"turn": "a", "score": "7", "csrf": csrf.token(f"rate:{saved.id}")})
    assert rated.status_code == 303, rated.text
    stat = routing_stats(store)["judge"]["echo"]
    assert (stat.n, stat.mean) == (1, pytest.approx(0.7))
    assert dlg.Orchestrator().routing_stats() == {}  # the default store: untouched
    with c:  # its lifespan runs the resumed dialogue; nothing is left to resume
        done = c.post(f"/d/{saved.id}/resume", follow_redirects=False,
                      data={"csrf": csrf.token(f"resume:{saved.id}")})
    assert done.status_code == 303 and done.headers["location"].endswith("?did=complete")
    deleted = c.post(f"/d/{saved.id}/delete", follow_redirects=False,
                     data={"csrf": csrf.token(f"delete:{saved.id}")})
    assert deleted.status_code == 303
    assert [r["id"] for r in store.list()] == []


def test_with_a_token_every_request_needs_it(saved):
    secret = "s" * 24
    c = client(token=secret)
    assert c.get("/").status_code == 403
    assert c.get(f"/d/{saved.id}/export/json").status_code == 403
    assert c.get("/", params={"token": "wrong" * 5}).status_code == 403
    opened = c.get(f"/d/{saved.id}", params={"token": secret}, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == f"/d/{saved.id}"
    assert "httponly" in opened.headers["set-cookie"].lower()
    assert c.get(f"/d/{saved.id}").status_code == 200  # the cookie carries it now


def test_a_local_viewer_refuses_other_host_names(saved):
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 reads nothing."""
    rebound = TestClient(create_app(None), base_url="http://evil.example")
    assert rebound.get("/").status_code == 400
    other_loopback = TestClient(create_app(None, host="127.0.0.2"),
                                base_url="http://127.0.0.2:8765")
    assert other_loopback.get("/").status_code == 200


def test_is_local():
    assert all(map(is_local, ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"]))
    assert not any(map(is_local, ["0.0.0.0", "::", "192.168.1.2", "example.com", ""]))


def test_serve_refuses_a_non_local_host_without_a_token():
    from click.testing import CliRunner

    from dlg.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert ("Error: --host 0.0.0.0 is not this machine's loopback address: anyone who "
            "reaches it could read your dialogues. Give --token TOKEN (every request then "
            "needs it), or serve on 127.0.0.1\n") == result.output
    short = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--token", "abc"])
    assert short.exit_code == 2 and "--token must be at least 16 characters" in short.output


def test_many_open_lists_share_one_reader_hold_no_stream_slot_and_still_update():
    """70 list streams at once (past the 64 slots a stream of its own takes), half of
    them filtered, each get their rows from reads of the store shared by all of them
    (not one read per stream), hold no slot, and each shows a dialogue saved later."""
    import anyio

    from dlg.records.store import open_store

    opened = 70  # past the 64 slots

    store = open_store(None)
    first = dlg.run_sync(ONE_TURN, {"topic": "first"}, model="echo")
    lists = 0

    class Counting:
        def __getattr__(self, name):
            return getattr(store, name)

        def list(self):
            nonlocal lists
            lists += 1
            return store.list()

    app = create_app(Counting())
    page = next(r.endpoint.__self__ for r in app.routes if getattr(r, "path", "") == "/events")
    statuses: list[int] = []
    seen: dict[int, list[str]] = {}
    late: dict[str, object] = {}

    async def main() -> None:
        everyone = anyio.Event()

        async def stream(n: int) -> None:
            async def send(message):
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])
                    if message["status"] != 200:
                        everyone.set()
                elif b"event: update" in message.get("body", b""):
                    seen.setdefault(n, []).append(message["body"].decode())
                    if all(late["id"] in "".join(seen.get(i, [])) for i in range(opened)
                           ) if "id" in late else len(seen) == opened:
                        everyone.set()

            await follow(app, "/events", send, b"mode=solo" if n % 2 else b"")

        async with anyio.create_task_group() as tasks:
            for n in range(opened):
                tasks.start_soon(stream, n)
            with anyio.fail_after(60):
                await everyone.wait()  # every stream's first rows (or a refusal)
                late["slots"], late["reads"] = page.viewer.streams, lists
                if statuses != [200] * opened:
                    tasks.cancel_scope.cancel()
                    return
                late["following"] = page.shared.following if hasattr(page, "shared") else -1
                everyone = anyio.Event()
                later = await anyio.to_thread.run_sync(
                    lambda: dlg.run_sync(ONE_TURN, {"topic": "later"}, model="echo"))
                late["id"] = later.id
                await everyone.wait()  # every stream shows it
            tasks.cancel_scope.cancel()

    anyio.run(main)
    assert statuses == [200] * opened
    assert late["slots"] == 0 and late["following"] == opened
    assert all(first.id in seen[n][0] for n in range(opened))
    assert lists < opened and late["reads"] < opened


def test_lists_followed_under_more_filters_than_are_kept_are_refused_not_each_remade(
        monkeypatch):
    """Each filter followed live makes its rows again from every read (about 90 ms for 10k
    dialogues): the kept filters (``VIEWS_KEPT``) bound that work, and a live list under
    yet another filter is refused (503) while they are all followed, rather than made per
    read beside them; a filter already followed shares its rows."""
    import anyio

    from dlg.serve import listing

    monkeypatch.setattr(listing, "VIEWS_KEPT", 3)
    dlg.run_sync(ONE_TURN, {"topic": "first"}, model="echo")
    app = create_app(None)
    statuses: dict[int, int] = {}
    queries = [b"q=a", b"q=b", b"q=c", b"q=d", b"q=e", b"q=a"]

    async def main() -> None:
        async def stream(n: int, started: anyio.Event) -> None:
            async def send(message):
                if message["type"] == "http.response.start":
                    statuses[n] = message["status"]
                    started.set()

            await follow(app, "/events", send, queries[n])

        async with anyio.create_task_group() as tasks:
            with anyio.fail_after(60):
                for n in range(len(queries)):  # one after the other: which are refused
                    started = anyio.Event()
                    tasks.start_soon(stream, n, started)
                    await started.wait()
            tasks.cancel_scope.cancel()

    anyio.run(main)
    assert statuses == {0: 200, 1: 200, 2: 200, 3: 503, 4: 503, 5: 200}
