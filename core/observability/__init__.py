"""Seeing what runs: correlation ids (``context``), structured logs (``logs``), secret
redaction (``redact``) and the event-loop watchdog (``watchdog``). OpenTelemetry spans
and metrics are a plugin (``dlg.plugins.telemetry``)."""
