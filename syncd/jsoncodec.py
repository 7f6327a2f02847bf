"""JSON in and out of syncd: orjson where it gives the same values, the standard library otherwise.

A catch-up decodes every page and encodes every event's payload (the ledger) and every JSON column of
the mirrors; with the standard library that was a sixth of its CPU, and orjson does the same work
about three times (decoding) to seven times (encoding) faster.

Same values as ``json`` with ``separators=(",", ":")`` and ``default=str``. orjson writes the plain JSON
types (what a decoded page holds) and UUIDs; anything else (datetimes, dataclasses, tuple subclasses such
as named tuples, sets, keys that are not strings, integers beyond 64 bits) sends the whole value to the
standard library, as before. Reading, what orjson refuses (NaN, lone surrogates) or would change goes to
the standard library: any document with a run of 19 digits, since orjson reads an integer beyond 64 bits
as a float. Two differences remain, both outside JSON proper: a non-finite float is written as ``null``
(the standard library wrote ``NaN``/``Infinity``, which are not JSON and which PostgreSQL refused), and a
plain ``Enum`` member as its value (the standard library wrote ``str(member)``). Stored text differs in
form only: non-ASCII characters as UTF-8 where ``json`` wrote ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

#: orjson formats these itself; passed through, they raise (no ``default``) and go to the standard library.
JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_STDLIB = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``; anything JSON has no type for is written as its ``str()``."""
    try:
        return orjson.dumps(value, option=JSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one: a type it leaves to us, a 64-bit overflow, ...
        return _STDLIB.encode(value)


#: Every ASCII digit to "1", every other byte to "0": a run of digits is then a plain substring search,
#: about 15 times faster than a regular expression over a page (0.4 µs an event instead of 7). 19 digits:
#: the shortest integers beyond 64 bits are negative ones (-9223372036854775809).
_DIGIT_MAP = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_LONG_RUN = b"1" * 19
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")


def _long_digits(data: bytes | str) -> bool:
    if isinstance(data, str):  # JSON columns read back: short texts
        return _LONG_DIGITS_TEXT.search(data) is not None
    return bytes(data).translate(_DIGIT_MAP).find(_LONG_RUN) >= 0


def loads(data: bytes | str) -> Any:
    """Parse a JSON document; ``ValueError`` if it is not one. Never ``RecursionError``: containers nested
    deeper than ``DECODE_DEPTH`` are each read as the string ``CUT_MARK`` (see :func:`cut_deep`), so one
    absurdly deep event cannot make the page around it unreadable."""
    try:
        if _long_digits(data):
            return json.loads(data)  # maybe an integer beyond 64 bits (or only a long number in a string)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # big integers, NaN, lone surrogates: the standard library takes them
            return json.loads(data)
    except RecursionError:
        return json.loads(cut_deep(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")))


#: Containers deeper than this are cut when decoding (the standard library's decoder recurses; Python's
#: limit is 1,000 frames, shared with the caller's stack). The store quarantines what is deeper than 254.
DECODE_DEPTH = 512
CUT_MARK = "(nested deeper than 512 levels: cut by syncd)"
_CUT = json.dumps(CUT_MARK).encode()


def cut_deep(data: bytes, limit: int = DECODE_DEPTH) -> bytes:
    """``data`` with every container that opens deeper than ``limit`` replaced by ``CUT_MARK`` (a string).
    A byte scanner (strings and escapes respected), so it never recurses; only used on documents the
    decoders refused for their depth."""
    out = bytearray()
    depth = 0
    cut_from = -1  # the depth at which the current cut started; -1: not cutting
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
            if cut_from < 0:
                out.append(byte)
            continue
        if byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit and cut_from < 0:
                cut_from = depth
                out += _CUT
                continue
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
            if cut_from >= 0 and depth < cut_from:
                cut_from = -1
                continue
        if cut_from < 0:
            out.append(byte)
    return bytes(out)


# ---- safe text forms of what a provider sent (quarantined events, error messages) ----------------------

#: The safe raw form of a quarantined event is cut at this many characters, its strings at STRING_LIMIT.
RAW_LIMIT = 4000
STRING_LIMIT = 200
_RAW_DEPTH = 12


def safe_text(text: str, limit: int = STRING_LIMIT) -> str:
    """``text`` as printable ASCII (JSON escapes: NUL, controls and surrogates as ``\\uXXXX``), cut."""
    if len(text) <= limit:
        return json.dumps(text, ensure_ascii=True)[1:-1]
    return f"{json.dumps(text[:limit], ensure_ascii=True)[1:-1]}… ({len(text)} chars)"


def safe_raw(value: Any, limit: int = RAW_LIMIT) -> str:
    """A bounded, printable ASCII form of whatever a provider sent: JSON-like, strings cut at
    ``STRING_LIMIT``, containers beyond a few levels shown as ``…``, the whole cut at ``limit``."""
    parts: list[str] = []
    _render(value, parts, 0, [0], limit)
    text = "".join(parts)
    return text if len(text) <= limit else text[:limit] + "…"


def _render(value: Any, out: list[str], depth: int, size: list[int], limit: int) -> None:
    if size[0] > limit:
        return
    if isinstance(value, dict | list | tuple):
        if depth >= _RAW_DEPTH:
            piece = "{…}" if isinstance(value, dict) else "[…]"
            out.append(piece)
            size[0] += len(piece)
            return
        is_dict = isinstance(value, dict)
        out.append("{" if is_dict else "[")
        items: Iterable[tuple[Any, Any]] = (value.items() if isinstance(value, dict)
                                            else ((None, v) for v in value))
        for n, (key, item) in enumerate(items):
            if size[0] > limit:
                break
            if n:
                out.append(",")
            if is_dict:
                out.append(f'"{safe_text(str(key))}":')
            _render(item, out, depth + 1, size, limit)
        out.append("}" if is_dict else "]")
        return
    if isinstance(value, str):
        piece = f'"{safe_text(value)}"'
    elif value is None or isinstance(value, bool):
        piece = {None: "null", True: "true", False: "false"}[value]
    else:
        piece = safe_text(repr(value))
    out.append(piece)
    size[0] += len(piece)
