"""OpenTelemetry spans and metrics for dialogues, phases, turns and model calls.

With only the OpenTelemetry API installed this plugin does nothing and costs nothing. It
becomes active when the program has configured an OpenTelemetry SDK, or when
``DLG_TELEMETRY`` asks dlg to set one up (``dlg run --telemetry ...``):

- ``console``: spans and metrics printed to stderr;
- ``otlp``: exported over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``
  (``pip install 'dlg-orchestrator[otel]'``);
- ``prometheus[:PORT]``: metrics served for Prometheus on PORT (default 9464)
  (``pip install 'dlg-orchestrator[prometheus]'``).

Spans: ``dlg.dialogue``, ``dlg.phase``, ``dlg.turn`` and ``chat {model}`` (the model
call), with the GenAI semantic-convention attributes (``gen_ai.*``) plus the cost, and
``dlg.dialogue.id``: the same correlation id the logs carry. Metrics:
``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``,
``dlg.turn.duration``, ``dlg.cost``, ``dlg.turn.failures``, ``dlg.turn.fallbacks``,
``dlg.event_loop.max_block``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dlg.plugin import hookimpl

_NS = 1_000_000_000


def _ns(ts: float | None) -> int | None:
    return None if ts is None else int(ts * _NS)


class Telemetry:
    """Records spans and metrics from lifecycle events (a dlg plugin object)."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None):
        from opentelemetry import metrics, trace

        from dlg.plugin import version as __version__

        self.tracer = trace.get_tracer("dlg", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("dlg", __version__, meter_provider=meter_provider)
        self.trace = trace
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens per model call")
        self.operation = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Model call duration")
        self.turn_duration = meter.create_histogram(
            "dlg.turn.duration", unit="s", description="Turn duration, retries included")
        self.cost = meter.create_counter("dlg.cost", unit="USD", description="Model cost")
        self.failures = meter.create_counter("dlg.turn.failures", description="Failed turns")
        self.fallbacks = meter.create_counter(
            "dlg.turn.fallbacks", description="Turns answered by a fallback model")
        self.loop_block = meter.create_histogram(
            "dlg.event_loop.max_block", unit="ms", description="Longest event-loop block")
        self.spans: dict[tuple[str, str | None], Any] = {}

    @staticmethod
    def _common(dialogue: Any) -> dict[str, Any]:
        return {"dlg.dialogue.id": dialogue.id, "dlg.mode": dialogue.mode}

    @hookimpl
    def dialogue_started(self, dialogue: Any) -> None:
        span = self.tracer.start_span(f"dlg.dialogue {dialogue.mode}",
                                      attributes=self._common(dialogue),
                                      start_time=_ns(dialogue.started_at))
        self.spans[(dialogue.id, None)] = span

    def _parent(self, dialogue: Any) -> Any:
        span = self.spans.get((dialogue.id, None))
        return self.trace.set_span_in_context(span) if span is not None else None

    @hookimpl
    def turn_started(self, dialogue: Any, turn: Any) -> None:
        attrs = {**self._common(dialogue), "dlg.turn.id": turn.id, "dlg.turn.role": turn.role,
                 "dlg.phase": turn.phase, "gen_ai.operation.name": "chat",
                 "gen_ai.request.model": turn.model or ""}
        if turn.participant:
            attrs["dlg.participant"] = turn.participant
        self.spans[(dialogue.id, turn.id)] = self.tracer.start_span(
            f"dlg.turn {turn.id}", context=self._parent(dialogue), attributes=attrs,
            start_time=_ns(turn.started_at))

    @hookimpl
    def turn_finished(self, dialogue: Any, turn: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.spans.pop((dialogue.id, turn.id), None)
        if span is None:  # a skipped turn, or one that failed before it started
            span = self.tracer.start_span(
                f"dlg.turn {turn.id}", context=self._parent(dialogue),
                attributes={**self._common(dialogue), "dlg.turn.id": turn.id},
                start_time=_ns(turn.started_at))
        model = turn.model or ""
        attrs = {**self._common(dialogue), "gen_ai.operation.name": "chat",
                 "gen_ai.request.model": model, "gen_ai.system": model.split(":")[0]}
        span.set_attribute("dlg.turn.status", turn.status)
        if turn.status == "completed":
            usage = turn.usage
            span.set_attributes({
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": usage.prompt,
                "gen_ai.usage.output_tokens": usage.completion,
                "dlg.cost_usd": turn.cost_usd or 0.0,
                "dlg.turn.replaced": list(turn.replaced),
            })
            # the model call, as a child span with its measured times
            call = self.tracer.start_span(
                f"chat {model}", context=self.trace.set_span_in_context(span),
                attributes={**attrs, "gen_ai.response.model": model,
                            "gen_ai.usage.input_tokens": usage.prompt,
                            "gen_ai.usage.output_tokens": usage.completion},
                start_time=_ns((turn.ended_at or 0) - (turn.latency_seconds or 0)))
            call.end(end_time=_ns(turn.ended_at))
            self.tokens.record(usage.prompt, {**attrs, "gen_ai.token.type": "input"})
            self.tokens.record(usage.completion, {**attrs, "gen_ai.token.type": "output"})
            self.operation.record(turn.latency_seconds or 0.0, attrs)
            if turn.cost_usd:
                self.cost.add(turn.cost_usd, attrs)
            if turn.replaced:
                self.fallbacks.add(1, attrs)
        elif turn.status == "failed":
            span.set_status(Status(StatusCode.ERROR, turn.error or "failed"))
            self.failures.add(1, attrs)
        if turn.started_at and turn.ended_at:
            self.turn_duration.record(turn.ended_at - turn.started_at,
                                      {**attrs, "dlg.turn.status": turn.status})
        span.end(end_time=_ns(turn.ended_at))

    @hookimpl
    def dialogue_finished(self, dialogue: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.spans.pop((dialogue.id, None), None)
        if span is None:
            return
        parent = self.trace.set_span_in_context(span)
        phases: dict[str, list[Any]] = {}
        for t in dialogue.turns:
            if t.started_at and t.ended_at:
                phases.setdefault(t.phase, []).append(t)
        for phase, turns in phases.items():
            self.tracer.start_span(
                f"dlg.phase {phase}", context=parent,
                attributes={**self._common(dialogue), "dlg.phase": phase,
                            "dlg.phase.turns": len(turns)},
                start_time=_ns(min(t.started_at for t in turns)),
            ).end(end_time=_ns(max(t.ended_at for t in turns)))
        m = dialogue.metrics
        span.set_attributes({"dlg.status": dialogue.status, "dlg.total_tokens": m.total_tokens,
                             "dlg.total_cost_usd": m.total_cost_usd,
                             "dlg.substitutions": m.substitutions})
        loop = (dialogue.metadata or {}).get("event_loop")
        if loop:
            span.set_attribute("dlg.event_loop.max_block_ms", loop["max_block_ms"])
            self.loop_block.record(loop["max_block_ms"], self._common(dialogue))
        if dialogue.status != "completed":
            span.set_status(Status(StatusCode.ERROR, dialogue.error or dialogue.status))
        span.end(end_time=_ns(dialogue.ended_at))


_EXTRAS = {"console": "otel", "otlp": "otel", "prometheus": "prometheus"}


def configure(spec: str) -> tuple[Any, Any]:
    """Install an OpenTelemetry SDK exporting as ``spec`` says; return the providers.

    Raises ``PluginError`` for an unknown exporter, or one whose packages are missing
    (with the pip command that installs them)."""
    from dlg.plugin import PluginError

    kind = spec.partition(":")[0]
    if kind not in _EXTRAS:
        raise PluginError(f"'{spec}' is not a telemetry exporter (--telemetry, DLG_TELEMETRY):"
                          " use console, otlp or prometheus[:PORT]")
    try:
        return _configure(spec)
    except ImportError as exc:
        raise PluginError(
            f"--telemetry {kind} needs packages that are not installed ({exc.name}): "
            f"pip install 'dlg-orchestrator[{_EXTRAS[kind]}]'") from None


def _configure(spec: str) -> tuple[Any, Any]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    kind, _, arg = spec.partition(":")
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "dlg")})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if kind == "console":
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        tracer_provider.add_span_processor(
            SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
    elif kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    elif kind == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        start_http_server(int(arg or 9464))
        readers.append(PrometheusMetricReader())
    else:
        raise ValueError(f"unknown telemetry exporter '{spec}': console, otlp or prometheus")
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


_default: Any = None
_configured_here = False
_env_read = False


def _active() -> Any:
    """The process-wide recorder, or None when no SDK is configured (nothing to record).

    Called at every lifecycle event, so the common case (no SDK) is two lookups.
    """
    global _default, _configured_here, _env_read
    if _default is not None:
        return _default
    if not _env_read:  # DLG_TELEMETRY is read once, at the first event
        _env_read = True
        spec = os.environ.get("DLG_TELEMETRY")
        if spec:
            configure(spec)
            _configured_here = True
            _default = Telemetry()
            return _default
    if "opentelemetry.sdk" not in sys.modules or not _sdk_configured():
        return None  # no SDK configured in this program: the API would drop everything
    _default = Telemetry()
    return _default


_api: tuple[Any, Any] | None = None  # opentelemetry's metrics and trace, once imported


def _sdk_configured() -> bool:
    """Whether the program set a tracer or meter provider (importing the SDK is not
    enough: langsmith imports it, and the API then still drops everything). Asked when
    each dialogue starts, until one is."""
    global _api
    if _api is None:
        from opentelemetry import metrics, trace

        _api = (metrics, trace)
    metrics, trace = _api
    return not isinstance(trace.get_tracer_provider(),
                          (trace.ProxyTracerProvider, trace.NoOpTracerProvider)) or (
        type(metrics.get_meter_provider()).__name__ not in ("_ProxyMeterProvider",
                                                            "NoOpMeterProvider"))


def dlg_active() -> bool:
    """Asked by the kernel when a dialogue starts: with no SDK configured this plugin's
    lifecycle hooks are not called at all for that dialogue."""
    return _active() is not None


def flush() -> None:
    """Push out what is buffered (the CLI calls this before it exits)."""
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        if hasattr(provider, "force_flush"):
            provider.force_flush()


@hookimpl
def dialogue_started(dialogue):
    recorder = _active()
    if recorder is not None:
        recorder.dialogue_started(dialogue)


@hookimpl
def turn_started(dialogue, turn):
    recorder = _active()
    if recorder is not None:
        recorder.turn_started(dialogue, turn)


@hookimpl
def turn_finished(dialogue, turn):
    recorder = _active()
    if recorder is not None:
        recorder.turn_finished(dialogue, turn)


@hookimpl
def dialogue_finished(dialogue):
    recorder = _active()
    if recorder is not None:
        recorder.dialogue_finished(dialogue)
        if _configured_here:  # dlg set the exporters up: make sure nothing stays buffered
            flush()
