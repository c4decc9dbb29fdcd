from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dlg
from dlg.plugin_manager import build_plugin_manager, reset_plugin_manager

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[None]:
    """A fresh plugin manager, no third-party autoload, and a private mode cache per test."""
    monkeypatch.setenv("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("DLG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("DLG_MODES_PATH", "")
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    # `dlg batch` run in this process must leave its collector as it is
    monkeypatch.setenv("DLG_GC_FREEZE", "0")
    monkeypatch.delenv("DLG_MODEL", raising=False)
    monkeypatch.delenv("DLG_PLUGINS", raising=False)
    # no tiktoken encoding a developer cached: openai prompts are bounded by their bytes
    # unless a test places one (tests/test_openai_tokens.py)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    reset_plugin_manager(None)
    yield
    reset_plugin_manager(None)
    import logging

    from dlg.observability.logs import unconfigure

    unconfigure()  # in-process CLI runs install a log handler; do not let it leak
    logging.getLogger().setLevel(logging.WARNING)


@pytest.fixture
def pm() -> Any:
    """The process plugin manager, freshly built for this test."""
    manager = build_plugin_manager(autoload=False)
    reset_plugin_manager(manager)
    return manager


@pytest.fixture
def write_mode(tmp_path: Path):
    def write(text: str, name: str = "mode.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def prompt_text(model_input: Any) -> str:
    """The last human text of what a chat model was sent (a string or messages)."""
    return model_input if isinstance(model_input, str) else model_input[-1].content


class Recorder:
    """A LangChain chat model that records every call and answers from a script."""

    def __new__(cls, answers: list[str] | None = None, latency: float = 0.0) -> Any:
        from langchain_core.language_models.fake_chat_models import FakeListChatModel

        class Recording(FakeListChatModel):
            calls: list[Any] = []
            delay: float = 0.0

            async def ainvoke(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
                self.calls.append((messages, kwargs))
                if self.delay:
                    import anyio

                    await anyio.sleep(self.delay)
                return await super().ainvoke(messages, *args, **kwargs)

        return Recording(responses=answers or ["ok"], calls=[], delay=latency)


@pytest.fixture
def recorder():
    return Recorder


__all__ = ["ROOT", "Recorder", "dlg", "prompt_text"]


@pytest.fixture(autouse=True)
def _fresh_cooldowns() -> Iterator[None]:
    """Cool-downs, rate-limit holds and pacing are process-wide by design; tests start
    with none."""
    from dlg.models.pacing import pacer
    from dlg.models.resilience import cooldowns, gate

    cooldowns.reset()
    gate.reset()
    pacer.reset()
    yield
    cooldowns.reset()
    gate.reset()
    pacer.reset()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A real PostgreSQL server for the test module (see postgres_support)."""
    from tests.postgres_support import postgres_server

    with postgres_server() as url:
        yield url
