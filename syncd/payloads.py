"""``SYNCD_LOG_PAYLOADS``: whether payload values (users' e-mails, names…) may leave syncd in logs, spans and
stored run errors. Off by default (issue #25, item 4).

Off, a failing workflow's stored error and log line keep the exception's type and message, with every value of
the event's payload that the message quotes replaced by ``[payload value]`` (ids — ``id``, ``*_id``,
``object``, ``type``, ``number`` — stay: they are what operators search by), and SQL parameters cut as always
(``syncd.redaction.safe_error``). As a last line of defence, every log line and every exported span has its
e-mail addresses replaced by ``[e-mail]``, whatever code wrote them. On (``true``), none of this is done, for
debugging; ``syncd`` warns at start-up that it is on.

The switch is process-wide: the CLI sets it once from ``Settings.log_payloads`` before anything runs.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("syncd")

#: What a payload value quoted in an error becomes.
PAYLOAD_VALUE = "[payload value]"
#: What an e-mail address in a log line or a span becomes.
EMAIL_VALUE = "[e-mail]"
#: Keys whose values are identifiers, kept in errors (module docstring).
ID_KEYS = frozenset({"id", "object", "type", "number", "event"})
#: Shorter values are not masked: they would mask ordinary words ("ok", "no") in the message.
MIN_MASKED = 3

_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_on = False


def enable(on: bool) -> None:
    """Set the switch (the CLI, from ``SYNCD_LOG_PAYLOADS``), warning when payloads may be logged."""
    global _on
    _on = on
    if on:
        log.warning("SYNCD_LOG_PAYLOADS is on: payload values (users' e-mails and names) may appear in logs, spans "
                    "and stored run errors; turn it off once done debugging")


def logged() -> bool:
    """True when payload values may appear in logs, spans and errors (``SYNCD_LOG_PAYLOADS=true``)."""
    return _on


def without_payload(text: str, payload: Any) -> str:
    """``text`` (an error about an event) with the values of ``payload`` it quotes masked, then its e-mail
    addresses; ``text`` as it is when payloads may be logged."""
    if _on or not text:
        return text
    for value in sorted(set(_values(payload)), key=len, reverse=True):
        if value in text:
            text = text.replace(value, PAYLOAD_VALUE)
    return without_emails(text)


def exception_attributes(exc: BaseException, payload: Any) -> dict[str, str]:
    """Attributes for ``span.record_exception(exc, attributes=…)`` that replace the exception's message and
    stack trace with their payload-free forms (``without_payload``); none when payloads may be logged."""
    if _on:
        return {}
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"exception.message": without_payload(str(exc), payload),
            "exception.stacktrace": without_payload(stack, payload)}


def without_emails(text: str) -> str:
    """``text`` with e-mail addresses masked, unless payloads may be logged."""
    if _on or "@" not in text:
        return text
    return _EMAIL.sub(EMAIL_VALUE, text)


def _values(payload: Any, key: str = "") -> Iterator[str]:
    if isinstance(payload, Mapping):
        for k, v in payload.items():
            yield from _values(v, str(k))
    elif isinstance(payload, (list, tuple)):
        for v in payload:
            yield from _values(v, key)
    elif isinstance(payload, str) and len(payload) >= MIN_MASKED and key not in ID_KEYS \
            and not key.endswith("_id"):
        yield payload
