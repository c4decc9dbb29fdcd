"""Context compression: truncate and relevant_only, within max_context_tokens."""

from __future__ import annotations

import pytest

import dlg
from dlg import hookimpl

TOPICS = ["bees pollinate flowers and make honey in the hive",
          "tax law for small companies and their yearly accounts",
          "the queen bee and worker bees in the honey hive",
          "railway timetables and train delays in winter"]


def _mode(strategy, limit=30):
    turns = [{"id": f"t{i}", "role": f"R{i}", "prompt": f"say: {text}"}
             for i, text in enumerate(TOPICS)]
    turns.append({"id": "last", "role": "bee keeper", "description": "about bees and honey",
                  "prompt": "What do the bees in the hive do with honey?\n{{ transcript }}",
                  "context_compression": strategy, "max_context_tokens": limit})
    return {"name": "c", "turns": turns}


def test_truncate_keeps_the_most_recent_turns_that_fit():
    d = dlg.run_sync(_mode("truncate"), model="echo", store=None)
    info = d.turns[-1].metadata["context"]
    assert info["strategy"] == "truncate" and info["turns"] == ["t2", "t3"]
    assert info["tokens"] <= 30 < info["of_tokens"]
    assert "railway" in d.turns[-1].prompt and "tax law" not in d.turns[-1].prompt


def test_relevant_only_keeps_the_turns_about_the_same_thing():
    d = dlg.run_sync(_mode("relevant_only"), model="echo", store=None)
    info = d.turns[-1].metadata["context"]
    assert info["turns"] == ["t0", "t2"]  # the two about bees, in their order
    assert "queen bee" in d.turns[-1].prompt and "railway" not in d.turns[-1].prompt


def test_no_compression_when_everything_fits():
    d = dlg.run_sync(_mode("truncate", limit=10_000), model="echo", store=None)
    assert "context" not in (d.turns[-1].metadata or {})


def test_hook_register_embeddings(pm, monkeypatch):
    calls = []

    class Loud:
        def embed_documents(self, texts):
            calls.append(len(texts))
            return [[1.0 if "railway" in t else 0.0, 1.0] for t in texts]

        def embed_query(self, text):
            return [1.0, 0.0]

    class Plugin:
        @hookimpl
        def register_embeddings(self, register):
            register("loud", Loud)

    pm.register(Plugin(), name="loud-embeddings")
    monkeypatch.setenv("DLG_EMBEDDINGS", "loud")
    d = dlg.run_sync(_mode("relevant_only", limit=15), model="echo", store=None)
    assert calls and d.turns[-1].metadata["context"]["turns"] == ["t3"]
    monkeypatch.setenv("DLG_EMBEDDINGS", "nosuch")
    failed = dlg.run_sync(_mode("relevant_only", limit=15), model="echo", store=None)
    assert "'nosuch' is not a known embeddings" in failed.turns[-1].error


def test_an_unknown_strategy_is_a_mode_error():
    with pytest.raises(dlg.ModeError, match="'squeeze' is not one of"):
        dlg.load_mode(_mode("squeeze"))


def test_summary_keeps_recent_turns_and_summarises_older_ones_once(recorder):
    from .conftest import prompt_text

    mode = _mode("summary", limit=400)
    mode["turns"].insert(4, {"id": "again", "role": "follow-up",
                             "prompt": "more {{ transcript }}",
                             "context_compression": "summary", "max_context_tokens": 400})
    model = recorder(["word " * 300])  # every answer is long; summaries too, but capped
    d = dlg.run_sync(mode, model=model, store=None)
    assert d.status == "completed"
    info = d.turns[-1].metadata["context"]
    assert info["strategy"] == "summary" and info["summarised"]
    assert info["tokens"] <= 400 < info["of_tokens"]
    older = d.turn(info["summarised"][0])
    assert older.metadata["summary"].startswith("word")  # made by a model, kept on it
    assert "(summary)" in d.turns[-1].prompt
    asked = [prompt_text(m) for m, _ in model.calls
             if prompt_text(m).startswith("Summarise this contribution")]
    summarised = set(info["summarised"]) | set(d.turn("again").metadata["context"]
                                               ["summarised"])
    assert len(asked) == len(summarised)  # each summary made once, then reused
