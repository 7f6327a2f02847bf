"""The pure checks behind quarantine, by tables: what the ledger refuses (``unstorable``), the safe text
form kept instead (``safe_raw``), and the decoder's cut of absurd nesting (``jsoncodec.cut_deep``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from syncd import jsoncodec
from syncd.contracts import Event
from syncd.store.quarantine import MAX_DEPTH, unstorable


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def event(**fields: Any) -> Event:
    base: dict[str, Any] = {"stream": "workos", "id": "event_1", "type": "user.created",
                            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC), "data": {"name": "Ada"}}
    return Event(**{**base, **fields})


@pytest.mark.parametrize(("fields", "reason"), [
    ({}, None),
    ({"data": {"name": "Ada \\u0000 literally"}}, None),  # a backslash and "u0000" as text: storable
    ({"data": {"name": "ünïcödé ✓ 😀"}}, None),
    ({"data": {"blob": "x" * 1_000_000}}, None),
    ({"data": {"deep": nested(MAX_DEPTH - 1)}}, None),
    ({"data": {"name": "Ada\x00"}}, "payload holds a NUL character"),
    ({"data": {"Ada\x00": 1}}, "payload holds a NUL character"),  # keys too
    ({"data": {"tags": ["a", "\udc00"]}}, "payload holds an unpaired UTF-16 surrogate"),
    ({"data": {"deep": nested(MAX_DEPTH)}}, f"payload nested deeper than {MAX_DEPTH} levels"),
    ({"id": "e" * 201}, "id longer than 200 characters (201)"),
    ({"id": "event\x00"}, "id holds a NUL character"),
    ({"id": ""}, "id is not a non-empty string"),
    ({"type": "t" * 201}, "type longer than 200 characters (201)"),
    ({"action": "a" * 65}, "action longer than 64 characters (65)"),
    ({"action": "\ud800"}, "action holds an unpaired UTF-16 surrogate"),
    # the edges of the fast path for plain ASCII fields (quarantine._plain_fields)
    ({"id": "e" * 200, "type": "t" * 200, "action": "a" * 64}, None),
    ({"id": "évènement_1", "action": "créé"}, None),
    ({"action": ""}, "action is not a non-empty string"),
    ({"id": 12}, "id is not a non-empty string"),
    ({"type": "user\x00"}, "type holds a NUL character"),
    ({"action": "a\x00"}, "action holds a NUL character"),
])
def test_what_the_ledger_refuses(fields: dict[str, Any], reason: str | None) -> None:
    assert unstorable(event(**fields)) == reason


@pytest.mark.parametrize(("value", "shown"), [
    ({"a": None, "b": True, "c": 1.5}, '{"a":null,"b":true,"c":1.5}'),
    (["x\x00", "\ud800", "\x1b[2J"], '["x\\u0000","\\ud800","\\u001b[2J"]'),
    (nested(20), "[" * 12 + "[\u2026]" + "]" * 12),
    ("y" * 300, '"' + "y" * 200 + '\u2026 (300 chars)"'),
])
def test_the_safe_raw_form(value: Any, shown: str) -> None:
    text = jsoncodec.safe_raw(value)
    assert text == shown
    assert all(ch.isprintable() for ch in text)


def test_the_safe_raw_form_is_bounded() -> None:
    text = jsoncodec.safe_raw({f"k{i}": "v" * 150 for i in range(1000)})
    assert len(text) <= jsoncodec.RAW_LIMIT + 1 and text.endswith("\u2026")


@pytest.mark.parametrize(("levels", "cut"), [(600, False), (3000, True), (100_000, True)])
def test_the_decoder_cuts_nesting_beyond_its_depth_and_reads_the_rest(levels: int, cut: bool) -> None:
    """orjson reads up to 1,024 levels; deeper, the standard library would raise RecursionError."""
    body = '{"data":[{"id":"a","x":' + "[" * levels + '"s]\\\\\\"{"' + "]" * levels + '},{"id":"b"}]}'
    decoded = jsoncodec.loads(body.encode())
    assert decoded["data"][1] == {"id": "b"}  # the event after the deep one is intact
    depth, value = 0, decoded["data"][0]["x"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert value == (jsoncodec.CUT_MARK if cut else 's]\\"{')
    assert depth == (jsoncodec.DECODE_DEPTH - 3 if cut else levels)  # the event sits 3 levels down


def test_the_cut_leaves_strings_with_brackets_alone() -> None:
    text = json.dumps({"a": "[[[{{{", "b": [["]]]}}}"]]}).encode()
    assert jsoncodec.cut_deep(text, limit=3) == text
    assert jsoncodec.cut_deep(b'[[["a"]],1]', limit=2) == b'[["(nested deeper than 512 levels: cut by syncd)"],1]'
