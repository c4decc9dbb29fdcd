"""Support for the viewer's browser tests: headless Chromium driven through the Chrome
DevTools Protocol (a websocket of JSON messages), a ``dlg serve`` subprocess, and a
``gated`` model whose every answer waits for the test to let it through.

The ``gated`` model (``gated?gate=DIR``) answers a call once a file ``DIR/go`` exists,
taking it away, so a test releases one turn at a time and sees each arrive on the page:
no sleeps, no race with the dialogue's pace.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("DLG_CHROMIUM", "/usr/bin/chromium")
WAIT = 60.0  # seconds the longest wait may last (a bound, not a timing assertion)

PLUGIN = '''
import os, time
from dlg import hookimpl

ANSWER = '<script>window.__ran = 1</script> **bold** <img src=x onerror="window.__ran=1">'

def _make(name, options):
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Gated(BaseChatModel):
        gate: str = ""
        dlg_label: str = "gated"

        @property
        def _llm_type(self):
            return "gated"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            go = os.path.join(self.gate, "go")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    os.remove(go)
                    break
                except FileNotFoundError:
                    time.sleep(0.02)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(
                content=ANSWER,
                usage_metadata={"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}))])

    return Gated(gate=str(options["gate"]))

@hookimpl
def register_models(register):
    register("gated", _make)
'''

MODE = {"name": "gated-talk", "inputs": {"topic": {"type": "string"}},
        "turns": [{"id": "opening", "role": "Opening", "prompt": "Open on {{ topic }}"},
                  {"id": "reply", "role": "Reply", "prompt": "Reply to the opening"}]}


def have_chromium() -> bool:
    return shutil.which(CHROMIUM) is not None


def install(root: Path) -> dict[str, str]:
    """The gated plugin and mode under ``root``; the environment to run dlg in."""
    site = root / "site"
    info = site / "dlg_gated-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (site / "dlg_gated.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlg-gated\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[dlg]\ngated = dlg_gated\n")
    (root / "gated.json").write_text(json.dumps(MODE))
    (root / "gate").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLG_")}
    env.update(PYTHONPATH=str(site), DLG_DATA_DIR=os.environ["DLG_DATA_DIR"],
               DLG_CACHE_DIR=str(root / "cache"), DLG_PLUGINS="gated")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, what: str, wait: float = WAIT) -> Any:
    """``check()``'s first true answer, asked again until it gives one (at most ``wait``
    seconds: then the test fails saying ``what`` never happened)."""
    deadline = time.monotonic() + wait
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {wait:.0f} s")
        time.sleep(0.05)


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``dlg serve`` on 127.0.0.1:``port``, answering."""
    proc = subprocess.Popen([sys.executable, "-m", "dlg", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dlg serve exited: {proc.stderr.read().decode()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return True
        except OSError:
            return False

    wait_for(up, "dlg serve answering")
    return proc


class Browser:
    """Headless Chromium and one page of it, through the DevTools Protocol."""

    def __init__(self, profile: Path):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.closing = contextlib.ExitStack()
        self.closing.callback(self._kill)
        try:
            active = profile / "DevToolsActivePort"
            port = wait_for(lambda: active.exists() and active.read_text().split("\n")[0],
                            "chromium's DevTools port")
            targets = wait_for(lambda: self._pages(port), "chromium's page")
            self.ws = self.closing.enter_context(
                connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20))
            self.ids = itertools.count(1)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.closing.close()
            raise

    def _kill(self) -> None:
        # chromium and the processes it started: its own session, by its id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    @staticmethod
    def _pages(port: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            return [t for t in json.load(r) if t.get("type") == "page"]

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        self.ws.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:  # events come in between; only the answer to this call is wanted
            message = json.loads(self.ws.recv(timeout=WAIT))
            if message.get("id") == number:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        wait_for(lambda: self.js(f"location.href === {json.dumps(url)} && "
                                 "document.readyState === 'complete'"), f"{url} loaded")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        self.closing.close()
