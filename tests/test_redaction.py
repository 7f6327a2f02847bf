"""``syncd.redaction``: the one place text is made safe to show (issue 17), by tables."""

from __future__ import annotations

import pytest

from syncd.http import split_base_url
from syncd.redaction import error_summary, printable, redact_url, safe_error, scrub


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/secret", "https://hooks.slack.com/…"),
    ("https://api.example.com/v1?key=secret", "https://api.example.com/…"),
    ("https://api.example.com?key=secret", "https://api.example.com/…"),
    ("https://api.example.com/#token=secret", "https://api.example.com/…"),
    ("https://user:secret@api.example.com/", "https://api.example.com"),
    ("HTTP://API.example.com:8443", "http://api.example.com:8443"),
    ("http://[::1]:9/x", "http://[::1]:9/…"),
    ("http://host:notaport/secret", "…"),
    ("not a url", "…"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(("text", "shown"), [
    ("POST https://hooks.slack.com/services/T/B/X answered 503", "POST https://hooks.slack.com/… answered 503"),
    ("see https://x.com/a?k=1).", "see https://x.com/…)."),
    ("'https://x.com/a' and \"http://y/b\"", "'https://x.com/…' and \"http://y/…\""),
    ("smtps://me:pw@mail.example.com:465", "smtps://mail.example.com:465"),
    ("postgresql+psycopg://syncd:s3cret@db:5432/x", "postgresql+psycopg://***@db:5432/x"),  # the host stays
    ("Authorization: Bearer abc.def", "Authorization: ***"),
    ("key sk_live_abc123 and ghp_abcdefgh12 and github_pat_11X", "key *** and *** and ***"),
    ("SELECT cursor FROM syncd_sources WHERE key = ?", "SELECT cursor FROM syncd_sources WHERE key = ?"),
    ("could not record: (x) fail\n[SQL: INSERT …]\n[parameters: ('bob@example.com', [1, 2])]\n(Background …)",
     "could not record: (x) fail\n[SQL: INSERT …]\n[parameters: …]\n(Background …)"),
    ("(psycopg.errors.UniqueViolation) dup\nDETAIL:  Key (email)=(bob@example.com) exists.",
     "(psycopg.errors.UniqueViolation) dup\nDETAIL: …"),
])
def test_scrub(text: str, shown: str) -> None:
    assert scrub(text) == shown
    assert scrub(shown) == shown  # idempotent: stored text scrubbed again reads the same


@pytest.mark.parametrize(("text", "keep_newlines", "shown"), [
    ("red\x1b[31m\r\nline", False, "red\\x1b[31m\\r\\nline"),
    ("a\nb\x07", True, "a\nb\\x07"),
    ("csi\x9b2J rtl\u202etxt", False, "csi\\x9b2J rtl\\u202etxt"),
    ("plain: é ü 日本 ✓", False, "plain: é ü 日本 ✓"),
])
def test_printable(text: str, keep_newlines: bool, shown: str) -> None:
    assert printable(text, keep_newlines=keep_newlines) == shown


SQLITE_ERROR = ("(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n"
                "[SQL: INSERT INTO users (email) VALUES (?)]\n[parameters: ('bob@example.com',)]\n"
                "(Background on this error at: https://sqlalche.me/e/20/gkpj)")
PG_ERROR = ('(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "users_email_key"\n'
            "DETAIL:  Key (email)=(bob@example.com) already exists.\n"
            "[SQL: INSERT INTO users (email) VALUES (%(email)s::VARCHAR)]\n"
            "[parameters: {'email': 'bob@example.com'}]")


@pytest.mark.parametrize(("stored", "kept", "line"), [
    (SQLITE_ERROR, "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email",
     "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email"),
    (PG_ERROR, '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "users_email_key"',
     '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "users_email_key"'),
    ("HTTP 500: first\nsecond\x1b[2J", "HTTP 500: first\nsecond\x1b[2J", "HTTP 500: first"),
    ("step 'slack' failed: POST https://hooks.slack.com/services/T/B/X answered 302",
     "step 'slack' failed: POST https://hooks.slack.com/… answered 302",
     "step 'slack' failed: POST https://hooks.slack.com/… answered 302"),
    ("", "", ""),
])
def test_stored_errors_lose_parameters_and_urls(stored: str, kept: str, line: str) -> None:
    assert safe_error(stored) == kept
    assert error_summary(stored) == line
    assert "bob@example.com" not in safe_error(stored)


def test_error_summary_is_bounded() -> None:
    assert len(error_summary("x" * 5000)) == 300


@pytest.mark.parametrize(("base", "path", "sent"), [
    ("https://api.example.com/v1?key=k", "/users", "https://api.example.com/v1/users?key=k"),
    ("https://api.example.com/v1/?key=k&a=1", "users", "https://api.example.com/v1/users?key=k&a=1"),
    ("https://api.example.com", "/users", "https://api.example.com/users"),
])
def test_a_base_urls_query_stays_a_query(base: str, path: str, sent: str) -> None:
    import httpx

    url, params = split_base_url(base)
    with httpx.Client(base_url=url, params=params) as client:
        assert str(client.build_request("GET", path).url) == sent
