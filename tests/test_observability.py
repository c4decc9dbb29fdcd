"""Logs, spans and metrics carry one correlation id; no secret reaches any output."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
from click.testing import CliRunner

import dlg
from dlg import hookimpl
from dlg.cli import cli

from .servers import FakeOpenAI

PARALLEL = {"name": "fan", "structure": "mixed", "phases": [
    {"id": "fan", "structure": "parallel", "turns": [
        {"id": "x", "role": "X", "prompt": "x"}, {"id": "y", "role": "Y", "prompt": "y"}]},
    {"id": "end", "turns": [{"id": "z", "role": "Z", "prompt": "z"}]}]}


@pytest.fixture
def json_logs():
    from dlg.observability.logs import configure

    stream = io.StringIO()
    configure(json_lines=True, level="INFO", stream=stream)
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_records_with_mapping_arguments_still_format(json_logs):
    logging.getLogger("lib").info("%(a)s and %(b)s", {"a": 1, "b": 2})
    assert json_logs()[-1]["message"] == "1 and 2"


async def test_json_logs_carry_correlation_ids_into_parallel_turns(json_logs):
    class Chatty:
        @hookimpl
        def turn_finished(self, dialogue, turn):
            logging.getLogger("some.library").info("inside %s", turn.id)

    dlg.get_plugin_manager().register(Chatty())
    d = await dlg.run(PARALLEL, model="echo?latency=0.02", store=None)
    records = json_logs()
    for r in records:
        assert {"timestamp", "level", "event", "message", "logger"} <= set(r)
        assert r["correlation_id"] == r["dialogue_id"] == d.id
    events = [(r["event"], r.get("turn_id")) for r in records if r["logger"] == "dlg.kernel"]
    assert events[0] == ("dialogue.started", None) and events[-1] == ("dialogue.finished", None)
    assert {("turn.started", t) for t in "xyz"} <= set(events)
    library = {r["message"]: r["turn_id"] for r in records if r["logger"] == "some.library"}
    assert library == {"inside x": "x", "inside y": "y", "inside z": "z"}
    spans = {r["span_id"] for r in records if r.get("turn_id") in ("x", "y")}
    assert len(spans) == 2  # each parallel branch has its own span id


def test_cli_log_json_flag():
    result = CliRunner().invoke(cli, ["--log-json", "run", "detective", "-t", "x", "-m", "echo",
                                      "-q"], catch_exceptions=False)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert {line["event"] for line in lines} >= {"dialogue.started", "turn.finished",
                                                 "dialogue.finished"}
    assert len({line["correlation_id"] for line in lines}) == 1


def test_a_log_level_that_is_not_one_is_a_usage_error(monkeypatch):
    ran = CliRunner().invoke(cli, ["--log-level", "loud", "ls"], catch_exceptions=False)
    assert ran.exit_code == 2 and "Traceback" not in ran.output
    assert ran.stderr == ("Error: 'loud' is not a log level: give DEBUG, INFO, WARNING or "
                          "ERROR\n")
    monkeypatch.setenv("DLG_LOG_LEVEL", "bogus")
    ran = CliRunner().invoke(cli, ["ls"], catch_exceptions=False)
    assert ran.exit_code == 2
    assert ran.stderr.startswith("Error: DLG_LOG_LEVEL='bogus' is not a log level")
    ran = CliRunner().invoke(cli, ["--log-level", "debug", "ls"], catch_exceptions=False)
    assert ran.exit_code == 0  # the flag wins, in any case


@pytest.fixture
def telemetry(pm):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from dlg.plugins.telemetry import Telemetry

    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    pm.register(Telemetry(tracer_provider, MeterProvider(metric_readers=[reader])))
    return spans, reader


async def test_spans_for_dialogue_phases_turns_and_model_calls(telemetry, tmp_path):
    spans, reader = telemetry
    registry = tmp_path / "r.yaml"
    registry.write_text("models:\n  echo:\n    price: {input: 1.0, output: 2.0}\n")
    d = await dlg.Orchestrator(model="echo?latency=0.02", registry=registry,
                               store=None).run(PARALLEL)
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    root = by_name["dlg.dialogue fan"]
    assert {s.name for s in finished} == {
        "dlg.dialogue fan", "dlg.phase fan", "dlg.phase end", "dlg.turn x", "dlg.turn y",
        "dlg.turn z", "chat echo?latency=0.02"} and len(finished) == 9
    for s in finished:
        assert s.attributes["dlg.dialogue.id"] == d.id  # the logs' correlation id
        assert s.context.trace_id == root.context.trace_id
        if s is not root:
            assert s.parent is not None
    turn_x = by_name["dlg.turn x"]
    assert turn_x.parent.span_id == root.context.span_id
    assert turn_x.attributes["gen_ai.usage.input_tokens"] == d.turn("x").usage.prompt
    assert turn_x.attributes["dlg.cost_usd"] == pytest.approx(d.turn("x").cost_usd)
    chats = [s for s in finished if s.name.startswith("chat ")]
    assert {c.parent.span_id for c in chats} == {
        by_name[f"dlg.turn {t}"].context.span_id for t in "xyz"}
    assert all(c.attributes["gen_ai.operation.name"] == "chat" for c in chats)
    # phases overlap their turns; the parallel turns overlap each other
    x, y = by_name["dlg.turn x"], by_name["dlg.turn y"]
    assert x.start_time < y.end_time and y.start_time < x.end_time

    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration",
            "dlg.turn.duration", "dlg.cost"} <= set(metrics)
    points = list(metrics["dlg.cost"].data.data_points)
    assert points[0].attributes["dlg.dialogue.id"] == d.id
    assert sum(p.value for p in points) == pytest.approx(d.total_cost_usd)


async def test_failed_turns_and_fallbacks_are_counted(telemetry):
    spans, reader = telemetry
    mode = {"name": "f", "participants": {"p": {"model": "echo?fail=always",
                                                "fallbacks": ["echo"]}, "q": None},
            "turns": [{"id": "a", "role": "A", "participant": "p", "prompt": "a"},
                      {"id": "b", "role": "B", "participant": "q", "prompt": "b",
                       "on_error": "continue"}]}
    d = await dlg.Orchestrator(store=None, models={"q": "echo?fail=always"},
                               retry=dlg.RetryPolicy(base_delay=0.001)).run(mode)
    assert d.turns[0].replaced == ("echo?fail=always",) and d.turns[1].status == "failed"
    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    assert sum(p.value for p in metrics["dlg.turn.fallbacks"].data.data_points) == 1
    assert sum(p.value for p in metrics["dlg.turn.failures"].data.data_points) == 1
    failed = next(s for s in spans.get_finished_spans() if s.name == "dlg.turn b")
    assert failed.status.status_code.name == "ERROR"


async def test_watchdog_reports_a_blocked_event_loop():
    class Blocker:
        @hookimpl
        def turn_finished(self, dialogue, turn):
            time.sleep(0.15)  # a plugin doing blocking work on the loop: the bug to catch

    blocker = Blocker()
    dlg.get_plugin_manager().register(blocker)
    d = await dlg.Orchestrator(model="echo", store=None, watchdog=True).run(PARALLEL)
    dlg.get_plugin_manager().unregister(blocker)
    loop = d.metadata["event_loop"]
    assert loop["blocks_over_threshold"] >= 1 and loop["max_block_ms"] >= 140
    clean = await dlg.Orchestrator(model="echo?latency=0.05", store=None,
                                   watchdog=True).run(PARALLEL)
    # without the blocking plugin (a busy machine may still stall now and then)
    assert clean.metadata["event_loop"]["blocks_over_threshold"] < loop["blocks_over_threshold"]


SECRET = "sk-test-SuperSecretValue1234567890"


def test_no_secret_in_logs_saved_dialogues_or_exports(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", SECRET)
    monkeypatch.setenv("DLG_LOG", "json")
    monkeypatch.setenv("DLG_LOG_LEVEL", "DEBUG")
    with FakeOpenAI(["401"]) as server:
        server.reply = f"the key is {SECRET}"  # even a model that repeats it
        spec = f"openai-compatible:m?base_url={server.base_url}&api_key={SECRET}"
        mode = tmp_path / "m.yaml"
        mode.write_text("name: s\nparticipants:\n  p:\n    fallbacks: [echo]\n"
                        "turns: [{id: a, role: A, participant: p, prompt: hi}]\n")
        runner = CliRunner()
        result = runner.invoke(cli, ["run", str(mode), "--model", spec, "-f", "json"],
                               catch_exceptions=False)
        assert result.exit_code == 0
        (saved,) = dlg.list_dialogues()
        outputs = [result.output, result.stderr,
                   json.dumps(dlg.load_dialogue(saved["id"]).to_dict())]
        for fmt in ("json", "markdown", "html"):
            outputs.append(runner.invoke(cli, ["export", saved["id"], "-f", fmt]).output)
        outputs.append(runner.invoke(cli, ["show", saved["id"], "--json"]).output)
        outputs.append(runner.invoke(cli, ["ls", "--json"]).output)
    joined = "\n".join(outputs)
    assert server.requests[0]["auth"] == f"Bearer {SECRET}"  # the key was really used
    assert SECRET not in joined
    assert "[REDACTED]" in joined


URL_PASSWORD = "Pw-urlpass-91827364"
LITERAL_KEY = "literal-key-5647382910"  # not shaped like a known key, not in the environment


def test_url_passwords_and_literal_keys_reach_no_output_not_even_the_store_files(
        monkeypatch, tmp_path):
    """A password in base_url and a key given only in the spec: redacted from logs, show,
    ls, exports and every byte the store wrote (its WAL included), even when the model's
    answer repeats them."""
    monkeypatch.setenv("DLG_LOG", "json")
    monkeypatch.setenv("DLG_LOG_LEVEL", "DEBUG")
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DLG_DATA_DIR", str(data_dir))
    with FakeOpenAI(["ok"]) as server:
        server.reply = f"I saw {LITERAL_KEY} and {URL_PASSWORD}"
        host = server.base_url.removeprefix("http://")
        spec = (f"openai-compatible:m?base_url=http://me:{URL_PASSWORD}@{host}"
                f"&api_key={LITERAL_KEY}")
        runner = CliRunner()
        result = runner.invoke(cli, ["run", "debate", "--topic", "t", "--model", spec],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        (saved,) = dlg.list_dialogues()
        outputs = [result.output, result.stderr]
        for fmt in ("json", "markdown", "html"):
            outputs.append(runner.invoke(cli, ["export", saved["id"], "-f", fmt]).output)
        outputs.append(runner.invoke(cli, ["show", saved["id"], "--json", "--text"]).output)
        outputs.append(runner.invoke(cli, ["ls", "--json"]).output)
    import base64

    # httpx sends the URL's user and password as basic auth: both were really used
    assert server.requests[0]["auth"] == "Basic " + base64.b64encode(
        f"me:{URL_PASSWORD}".encode()).decode()
    joined = "\n".join(outputs)
    assert "I saw [REDACTED] and [REDACTED]" in joined
    assert f"http://me:[REDACTED]@{host}" in joined
    for secret in (URL_PASSWORD, LITERAL_KEY):
        assert secret not in joined
        for path in data_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_telemetry_without_its_packages_says_what_to_install(monkeypatch):
    import builtins

    from dlg.plugins import telemetry

    real_import = builtins.__import__

    def no_sdk(name, *args, **kwargs):
        if name.startswith("opentelemetry.sdk"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sdk)
    monkeypatch.setenv("DLG_TELEMETRY", "")  # restored after the test: the CLI sets it
    monkeypatch.setattr(telemetry, "_env_read", False)
    monkeypatch.setattr(telemetry, "_default", None)
    result = CliRunner().invoke(cli, ["run", "debate", "--topic", "t", "--model", "echo",
                                      "--telemetry", "console", "-q"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert ("--telemetry console needs packages that are not installed "
            "(opentelemetry.sdk.metrics): pip install 'dlg-orchestrator[otel]'") in result.output
    monkeypatch.setattr(telemetry, "_env_read", False)
    monkeypatch.setattr(telemetry, "_default", None)
    unknown = CliRunner().invoke(cli, ["run", "debate", "--topic", "t", "--model", "echo",
                                       "--telemetry", "jaeger", "-q"])
    assert ("Error: 'jaeger' is not a telemetry exporter (--telemetry, DLG_TELEMETRY): use "
            "console, otlp or prometheus") in unknown.output
    assert "dlg_active" not in unknown.output  # the plugin's own words, not wrapped


def test_an_idle_plugin_is_not_called_per_turn(pm, monkeypatch):
    """``dlg_active()`` False: the plugin's lifecycle hooks are skipped for the dialogue.
    The telemetry plugin is idle when no OpenTelemetry SDK is configured, even where the
    SDK package has been imported (langsmith imports it)."""
    import sys

    from dlg import hookimpl
    from dlg.plugins import telemetry

    calls = []

    class Idle:
        def dlg_active(self):
            return False

        @hookimpl
        def turn_finished(self, turn):
            calls.append(turn.id)

    class Busy(Idle):
        def dlg_active(self):
            return True

    pm.register(Idle(), name="idle")
    monkeypatch.setattr(telemetry, "_default", None)
    assert "opentelemetry.sdk" in sys.modules  # imported, yet nothing is configured
    assert telemetry.dlg_active() is False
    mode = {"name": "m", "turns": [{"id": "a", "role": "A", "prompt": "x"}]}
    dlg.Orchestrator(model="echo", store=None, plugin_manager=pm).run_sync(mode)
    assert calls == []
    pm.register(Busy(), name="busy")
    dlg.Orchestrator(model="echo", store=None, plugin_manager=pm).run_sync(mode)
    assert calls == ["a"]


def test_ids_do_not_repeat_when_the_program_seeds_random():
    """Dialogue ids, span ids and lease tokens come from dlg's own generator: a script
    that calls random.seed(42) before each run (as experiments do) still gets new ids,
    and so does a child made by os.fork."""
    import os
    import random

    from dlg.observability.context import new_span_id
    from dlg.records.stamps import new_dialogue_id
    from dlg.records.store import Lease

    made = []
    for _ in range(3):
        random.seed(42)
        made.append((new_dialogue_id(), new_span_id(), Lease().token))
    for column in zip(*made, strict=True):
        assert len(set(column)) == 3
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, new_span_id().encode())
        os._exit(0)
    os.close(write)
    theirs = os.read(read, 64).decode()
    os.waitpid(child, 0)
    assert theirs and theirs != new_span_id()
