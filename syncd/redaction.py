"""Safe text for everything syncd writes where people or other systems read it.

One module, used at every place text leaves syncd (exception messages of the HTTP helpers and
integrations, log records, exported spans, ``syncd status``, ``/healthz``), so a new integration or a
new output gets the same treatment by calling it, not by re-inventing it:

- :func:`redact_url` — an outbound URL cut to scheme, host and port, with ``/…`` standing for a path
  or query it had. A Slack incoming-webhook URL *is* its secret (the path), and integration URLs may
  carry a key in the query, so neither is ever shown; user names and passwords neither.
- :func:`scrub` — free text with every http(s)/smtp(s) URL in it redacted as above, anything shaped
  like a credential (a bearer token, a WorkOS or GitHub key, the password of any ``user:pw@host``)
  masked as ``***``, and the values of a database error (SQLAlchemy's ``[parameters: …]``, PostgreSQL's
  ``DETAIL:`` line) cut. A last line of defence: the code never writes a secret on purpose.
- :func:`printable` — control characters (terminal escape sequences, newlines a provider put in an
  error message, bidirectional overrides) shown as ``\\x1b``-style escapes, so a provider's text can
  neither rewrite a terminal nor forge a log line.
- :func:`error_summary` — a stored error cut to its first line, with SQLAlchemy's
  ``[SQL: …]``/``[parameters: …]`` dump removed (the parameters are users' data).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: What a redacted path or query is shown as.
ELLIPSIS = "…"

#: Schemes whose URLs are redacted in free text. Database URLs are not: they only lose their password
#: (``_CREDENTIAL``), the rest (host, database name) is what an operator needs to read.
_URL = re.compile(r"(?i)\b(?:https?|smtps?|wss?)://[^\s\"'<>`]+")

#: Credential shapes: bearer tokens, WorkOS secret keys, GitHub tokens, the password of a URL.
_CREDENTIAL = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]+|sk_(?:live|test)_[A-Za-z0-9_]+|gh[pousr]_[A-Za-z0-9]{8,}|github_pat_\w+"
    r"|(?<=://)[^/@\s:]+:[^/@\s]+(?=@)"
)

#: Literal parts of which every ``_CREDENTIAL`` match has one (checked first: most text, such as a SQL
#: statement in a span, has none, and substring tests are far cheaper than the regular expression).
_CREDENTIAL_HINTS = ("bearer", "sk_live_", "sk_test_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "@")

#: C0 and C1 controls, DEL, and the Unicode bidirectional overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

#: SQLAlchemy's DBAPI error text: the driver's message, then "[SQL: …]", "[parameters: …]" and a
#: "(Background on this error at: …)" link, each possibly over several lines.
_SQL_DUMP = re.compile(r"\s*\[(?:SQL|parameters): .*", re.DOTALL)
_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")
#: The one-line parameter dump of a SQLAlchemy error, and PostgreSQL's DETAIL line, in free text.
_PARAMETERS = re.compile(r"\[parameters: [^\n]*\]")
_DETAIL = re.compile(r"DETAIL: [^\n]*")

#: PostgreSQL's DETAIL and CONTEXT lines quote the row's values ("Key (email)=(…) already exists").
_VALUE_LINES = re.compile(r"^\s*(?:DETAIL|CONTEXT):.*$\n?", re.MULTILINE)

#: Longest error summary kept (a provider's message can be a whole HTML page).
SUMMARY_LENGTH = 300


def redact_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]``, plus ``/…`` if it had a path or a query. Never raises:
    text that is not a URL becomes ``…``."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unbalanced IPv6 bracket
        return ELLIPSIS
    if not parts.scheme or not host:
        return ELLIPSIS
    shown_host = f"[{host}]" if ":" in host else host
    origin = f"{parts.scheme.lower()}://{shown_host}" + (f":{port}" if port is not None else "")
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{origin}/{ELLIPSIS}" if hidden else origin


def scrub(text: str) -> str:
    """``text`` with URLs redacted (:func:`redact_url`) and credential shapes masked as ``***``."""
    if "://" in text:
        text = _URL.sub(_redact_match, text)
    if "[parameters: " in text:
        text = _PARAMETERS.sub(f"[parameters: {ELLIPSIS}]", text)
    if "DETAIL: " in text:
        text = _DETAIL.sub(f"DETAIL: {ELLIPSIS}", text)
    lowered = text.lower()
    if not any(hint in lowered for hint in _CREDENTIAL_HINTS):
        return text
    return _CREDENTIAL.sub("***", text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    bare = url.rstrip(".,;:!?)]}")  # sentence punctuation after a URL is not part of it
    return redact_url(bare) + url[len(bare):]


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters shown as escapes (``\\n``, ``\\x1b``…). ``keep_newlines``: for
    text that is multi-line by nature (a traceback); other controls are escaped all the same."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def safe_error(text: str) -> str:
    """A stored error without what must not leave: SQL, parameter dumps and PostgreSQL's DETAIL lines
    (they quote values) dropped, URLs and credentials scrubbed. Its other lines are kept (for
    ``--json``); :func:`error_summary` is the one-line form."""
    return scrub(_VALUE_LINES.sub("", _BACKGROUND.sub("", _SQL_DUMP.sub("", text))).strip())


def error_summary(text: str, limit: int = SUMMARY_LENGTH) -> str:
    """A stored error as one safe line for people: :func:`safe_error`, its first line only, controls
    escaped, at most ``limit`` characters."""
    text = safe_error(text)
    line = printable(text.splitlines()[0] if text else "")
    return line if len(line) <= limit else line[: limit - 1] + ELLIPSIS
