"""Logging: JSON lines when not on a terminal (containers), readable text on one.

Contract: every line written inside a span carries ``trace_id`` and ``span_id`` (the ids Jaeger shows);
httpx's per-request INFO lines (full URLs) are silenced; in messages, extras and tracebacks every
outbound URL is cut to its scheme and host and anything shaped like a credential (a bearer token, a
WorkOS or GitHub key) is masked, as a last line of defence (:func:`syncd.redaction.scrub`) — the code
never logs one on purpose. Text lines escape control characters (a provider's escape sequences or
newlines cannot rewrite a terminal or forge a line); JSON lines are escaped by JSON itself.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from syncd.payloads import without_emails
from syncd.redaction import printable, scrub

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

#: Loggers quieter than the root, each with its reason.
_QUIET = (
    ("httpx", logging.WARNING),  # one INFO line per request, with the full URL
    ("httpcore", logging.WARNING),
    ("apscheduler.executors.default", logging.WARNING),  # "Running job …" every tick
    ("apscheduler.scheduler", logging.WARNING),
    ("alembic", logging.WARNING),
    # A collector that is down: one ERROR per batch given up, not a WARNING per retry and per dropped span.
    ("opentelemetry.exporter.otlp", logging.ERROR),
    ("opentelemetry.sdk._shared_internal", logging.ERROR),
)


def redact(text: str) -> str:
    """``text`` with outbound URLs cut to scheme and host and credential shapes replaced by ``***``; e-mail
    addresses masked too unless ``SYNCD_LOG_PAYLOADS`` is on (``syncd.payloads``)."""
    return without_emails(scrub(text))


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``/``span_id`` of the current span (if any) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = sys.modules.get("opentelemetry.trace")
        if trace is None:  # not loaded (`syncd check`): no span can be current; importing it costs 30 ms
            return True
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (int, float, bool, type(None))) else redact(str(value))
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message``; warnings and errors end with their trace id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return printable(super().formatStack(stack_info), keep_newlines=True)

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        trace_id = getattr(record, "trace_id", None)
        return f"{line}  [trace {trace_id}]" if trace_id and record.levelno >= logging.WARNING else line


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is at each record, not as it was at set-up (like logging's
    last-resort handler), so a CLI called in-process under a capturing test runner never writes to a
    closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> logging.Handler:
    """Install syncd's handler on the root logger (replacing one installed before) and return it.
    ``stream``: default the current ``sys.stderr``. ``fmt``: ``json``, ``text`` or ``auto`` (JSON
    unless the stream is a terminal)."""
    target = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not (hasattr(target, "isatty") and target.isatty()))
    handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_syncd", False):
            root.removeHandler(old)
    handler._syncd = True  # type: ignore[attr-defined]  # marks ours, for replacement
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet_level in _QUIET:
        logging.getLogger(name).setLevel(quiet_level)
    return handler
