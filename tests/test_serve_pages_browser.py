"""``dlg serve``'s batch and routing pages in a real browser: headless Chromium (the
system's, through the DevTools Protocol) against a real ``dlg serve`` on a real SQLite
store. A batch's page follows its rows as another process runs them; the routing page
says nothing is learned, then, after a turn is rated on its dialogue's page, shows what
the router learned and the rating, linking back to the turn, and follows scores recorded
elsewhere with no reload.

Skipped where Chromium is missing, unless ``DLG_REQUIRE_BROWSER=1``. With
``DLG_SCREENSHOTS=1`` it writes docs/serve.md's pictures of the two pages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import browser_support as bs

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.skipif(
    not bs.have_chromium() and os.environ.get("DLG_REQUIRE_BROWSER") != "1",
    reason=f"no Chromium at {bs.CHROMIUM} (DLG_REQUIRE_BROWSER=1 makes this a failure)")]

pytest.importorskip("starlette")
pytest.importorskip("websockets")

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
ONE_TURN = {"name": "solo", "inputs": {"topic": {"type": "string"}},
            "turns": [{"id": "a", "role": "Writer", "prompt": "{{ topic }}"}]}


def picture(tmp_path: Path, name: str) -> Path:
    """Where a page's screenshot goes: docs/img when asked (DLG_SCREENSHOTS=1), so a
    test run leaves the tree as it was."""
    return (IMG if os.environ.get("DLG_SCREENSHOTS") else tmp_path) / name


@pytest.fixture
def browser(tmp_path):
    b = bs.Browser(tmp_path / "profile")
    yield b
    b.close()


@pytest.fixture
def server():
    port = bs.free_port()
    proc = bs.serve(dict(os.environ), port)
    yield f"http://127.0.0.1:{port}"
    proc.kill()  # the process this test started, by its id
    proc.wait()
    proc.stderr.close()


def test_a_batch_page_follows_its_rows_live(tmp_path, browser, server):
    import dlg
    from dlg.records.store import open_store

    rows = [{"topic": t} for t in ["cars", "trains", "<b>boats</b>", "bikes"]]
    dlg.batch_sync(ONE_TURN, rows, model="echo", batch_id="batch-demo")
    for row in ("batch-demo-00002", "batch-demo-00003"):
        open_store(None).delete(row)  # not run yet: pending

    browser.open(f"{server}/")
    browser.js("document.querySelector('nav a[href=\"/b\"]').click()")
    bs.wait_for(lambda: browser.js("location.pathname === '/b' && "
                                   "document.readyState === 'complete'"), "the batches list")
    browser.js("document.querySelector('a[href=\"/b/batch-demo\"]').click()")
    bs.wait_for(lambda: browser.js("location.pathname === '/b/batch-demo' && "
                                   "!!document.body && document.body.dataset.live === "
                                   "'following'"), "the batch's page following its events")
    browser.js("window.__kept = 1")  # gone if the page reloads
    assert browser.js("document.querySelector('#progress .pending').innerText") == "2"
    assert "<b>boats</b>" in browser.js("document.getElementById('row-3').innerText")
    browser.screenshot(picture(tmp_path, "serve-batch.png"))

    dlg.batch_sync(ONE_TURN, rows, model="echo", batch_id="batch-demo")  # runs the rest
    bs.wait_for(lambda: browser.js("document.body.dataset.live === 'ended'"),
                "the batch's page ended with its last row")
    assert browser.js("window.__kept") == 1
    assert browser.js("document.querySelector('#progress .done').innerText") == "4"
    assert browser.js("document.querySelectorAll('#live a[href^=\"/d/\"]').length") == 4


def test_a_turn_rated_on_its_page_shows_on_the_routing_page(tmp_path, browser, server):
    import dlg
    from dlg.records.store import open_store
    from dlg.running.routing.learning import record_quality

    saved = dlg.run_sync(ONE_TURN, {"topic": "tabs or spaces"}, model="echo")
    browser.open(f"{server}/routing")
    assert "Nothing learned yet" in browser.js("document.body.innerText")

    browser.open(f"{server}/d/{saved.id}")
    browser.js("document.querySelector('#turn-a input[name=score]').value = '8'")
    browser.js("document.querySelector('#turn-a form.rate').submit()")
    bs.wait_for(lambda: browser.js("!!document.getElementById('rated')"), "the rating's page")

    browser.js("document.querySelector('nav a[href=\"/routing\"]').click()")
    bs.wait_for(lambda: browser.js("location.pathname === '/routing' && !!document.body && "
                                   "document.body.dataset.live === 'following'"),
                "the routing page following its events")
    assert browser.js("document.querySelectorAll('svg.quality circle.mean').length") == 1
    assert browser.js("document.querySelector('table.stats td.model').innerText") == "echo"
    link = browser.js("document.querySelector('table.history a').getAttribute('href')")
    assert link == f"/d/{saved.id}#turn-a"

    # scores recorded elsewhere (another process, a judge) arrive with no reload
    browser.js("window.__kept = 1")
    store = open_store(None)
    for model, scores in {"openai:gpt-4o-mini": [6, 7, 8, 6, 7],
                          "anthropic:claude-haiku-4-5": [8, 9, 7, 9],
                          "openai:gpt-5": [9, 10, 9]}.items():
        for score in scores:
            record_quality(store, "writer", model, score)
    bs.wait_for(lambda: browser.js(
        "document.querySelectorAll('svg.quality circle.mean').length === 4"),
        "the new scores shown live")
    assert browser.js("window.__kept") == 1
    assert browser.js("document.querySelectorAll('svg.scatter g.point').length") == 4
    browser.screenshot(picture(tmp_path, "serve-routing.png"))

    browser.js("document.querySelector('table.history a').click()")  # back to the turn
    bs.wait_for(lambda: browser.js(f"location.pathname === '/d/{saved.id}'"),
                "the rated turn's page")
    assert browser.js("location.hash") == "#turn-a"
