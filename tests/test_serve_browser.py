"""``dlg serve`` in a real browser: headless Chromium (the system's, driven through the
DevTools Protocol) against a real ``dlg serve`` on a real SQLite store, while ``dlg run``
runs a dialogue in another process. The dialogue appears in the list and its page updates
as each turn finishes, with no reload; an answer holding ``<script>`` shows as text and
never runs; rating a turn on its page changes what the learned router knows.

Skipped where Chromium is missing, unless ``DLG_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import browser_support as bs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not bs.have_chromium() and os.environ.get("DLG_REQUIRE_BROWSER") != "1",
    reason=f"no Chromium at {bs.CHROMIUM} (DLG_REQUIRE_BROWSER=1 makes this a failure)")]

pytest.importorskip("starlette")
pytest.importorskip("websockets")

# docs/serve.md's picture: taken here, written into the checkout only when asked
# (DLG_SCREENSHOTS=1), so a test run leaves the tree as it was
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "serve-dialogue.png"


@pytest.fixture
def browser(tmp_path):
    b = bs.Browser(tmp_path / "profile")
    yield b
    b.close()


def test_a_dialogue_running_elsewhere_appears_updates_live_and_is_rated(tmp_path, browser):
    import dlg

    env = bs.install(tmp_path)
    port = bs.free_port()
    server = bs.serve(env, port)
    run = None
    try:
        home = f"http://127.0.0.1:{port}/"
        browser.open(home)
        assert "No saved dialogue" in browser.js("document.body.innerText")
        browser.js("window.__kept = 1")  # gone if the page reloads

        gate = tmp_path / "gate"
        run = subprocess.Popen(
            [sys.executable, "-m", "dlg", "run", str(tmp_path / "gated.json"), "-q",
             "--model", f"gated?gate={gate}", "--topic", "<b>tabs</b> or spaces"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # a dialogue is saved when it starts and after each turn: the list (which follows
        # the store) shows it, running, with no reload
        (gate / "go").write_text("")
        link = bs.wait_for(lambda: browser.js(
            "(document.querySelector('#live a[href^=\"/d/\"]') || {}).href"),
            "the running dialogue listed")
        assert browser.js("window.__kept") == 1
        assert browser.js("document.querySelector('#live td.status').innerText") == "running"

        browser.open(link)
        browser.js("window.__kept = 1")
        bs.wait_for(lambda: browser.js("document.querySelectorAll('.answer').length === 1"),
                    "the first turn's answer shown")
        assert browser.js("document.getElementById('status').innerText") == "running"
        (gate / "go").write_text("")  # the second turn answers: it arrives on the page
        bs.wait_for(lambda: browser.js("document.querySelectorAll('.answer').length === 2"),
                    "the second turn's answer shown live")
        bs.wait_for(lambda: browser.js("document.body.dataset.live === 'ended'"),
                    "the live stream ended with the dialogue")
        assert run.wait(timeout=bs.WAIT) == 0, run.stderr.read().decode()
        assert browser.js("window.__kept") == 1  # all of it without a reload
        assert browser.js("document.getElementById('status').innerText") == "completed"

        # the hostile answer: shown as text, no element made of it, nothing ran
        answer = browser.js("document.querySelector('.answer').innerText")
        assert "<script>window.__ran = 1</script>" in answer
        assert '<img src=x onerror="window.__ran=1">' in answer
        assert browser.js("document.querySelectorAll('#live script, #live img').length") == 0
        assert browser.js("document.querySelector('.answer strong').innerText") == "bold"
        assert browser.js("typeof window.__ran") == "undefined"
        assert "<b>tabs</b> or spaces" in browser.js("document.querySelector('dd').innerText")
        assert str(gate) not in browser.js("document.body.innerText")  # no model options
        shot = SCREENSHOT if os.environ.get("DLG_SCREENSHOTS") else tmp_path / "serve.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 1000  # a picture of the page was taken

        # rating the first turn on its page: the learned router's statistics change
        assert dlg.Orchestrator().routing_stats() == {}
        browser.js("document.querySelector('#turn-opening input[name=score]').value = '8'")
        browser.js("document.querySelector('#turn-opening form.rate').submit()")
        bs.wait_for(lambda: browser.js("!!document.getElementById('rated')"),
                    "the rating's page")
        (learned,) = dlg.Orchestrator().routing_stats()["opening"].items()
        assert learned[0].startswith("gated")
        assert (learned[1].n, learned[1].mean) == (1, pytest.approx(0.8))
    finally:
        for proc in (run, server):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()  # the processes this test started, by their ids
                proc.wait()
                proc.stderr.close()


@pytest.mark.long  # about 10 s: a dlg run killed, a server, a browser
def test_an_interrupted_dialogue_is_resumed_from_its_page_and_followed_live(tmp_path,
                                                                              browser):
    import dlg

    env = bs.install(tmp_path)
    port = bs.free_port()
    server = bs.serve(env, port)
    gate = tmp_path / "gate"
    run = subprocess.Popen(
        [sys.executable, "-m", "dlg", "run", str(tmp_path / "gated.json"), "-q",
         "--model", f"gated?gate={gate}", "--topic", "tabs"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        (gate / "go").write_text("")  # the first turn answers, the second waits
        row = bs.wait_for(lambda: next((r for r in dlg.list_dialogues()
                                        if r.get("turns_completed") == 1), None),
                          "the first turn saved")
        run.kill()  # SIGKILL in the second turn: the dialogue is interrupted
        run.wait()
        page = f"http://127.0.0.1:{port}/d/{row['id']}"
        browser.open(page)
        assert browser.js("document.getElementById('status').innerText") == "interrupted"
        browser.js("document.getElementById('resume').click()")  # a POST with its token
        bs.wait_for(lambda: browser.js("location.search === '?did=resumed' && "
                                       "document.readyState === 'complete'"),
                    "the page after resuming")
        browser.js("window.__kept = 1")  # gone if the page reloads
        assert "Resumed here" in browser.js("document.getElementById('notice').innerText")
        assert browser.js("document.getElementById('status').innerText") == "running"
        assert browser.js("document.getElementById('resume')") is None
        (gate / "go").write_text("")  # the second turn answers, in the viewer's process
        bs.wait_for(lambda: browser.js("document.querySelectorAll('.answer').length === 2"),
                    "the resumed turn's answer shown live")
        bs.wait_for(lambda: browser.js("document.body.dataset.live === 'ended'"),
                    "the live stream ended with the dialogue")
        assert browser.js("window.__kept") == 1
        assert browser.js("document.getElementById('status').innerText") == "completed"
        assert browser.js("document.querySelectorAll('#timeline rect').length") == 2
        assert dlg.load_dialogue(row["id"]).status == "completed"
        shots = SCREENSHOT.parent if os.environ.get("DLG_SCREENSHOTS") else tmp_path
        browser.screenshot(shots / "serve-resumed.png")

        browser.open(f"http://127.0.0.1:{port}/?model=gated&from=2000-01-01")
        assert row["id"] in browser.js("document.getElementById('live').innerText")
        browser.screenshot(shots / "serve-list.png")
        browser.open(f"http://127.0.0.1:{port}/?from=2000-13-01")
        assert "is not a date" in browser.js("document.getElementById('message').innerText")
    finally:
        for proc in (run, server):
            if proc.poll() is None:
                proc.kill()  # the processes this test started, by their ids
            proc.wait()
            proc.stderr.close()
