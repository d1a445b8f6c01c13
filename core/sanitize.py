"""Text and JSON from outside: refused at the edge when a person sent it, made safe when task
code produced it.

What callers send (arguments, reasons, names, correlation ids) is checked: text every database
can store (no NUL, no lone surrogate), JSON of finite numbers nested at most MAX_DEPTH deep.
What task code returns or raises is never refused (the task already ran): invalid characters
become U+FFFD, values JSON cannot hold become their repr, and long text is cut with a marker
that says how much was cut.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from core.errors import InvalidInput

MAX_DEPTH = 32
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


# -- what task code produced: made safe, never refused --------------------------------------------


def clean_text(value: object, limit: int) -> str:
    """`value` as text every database stores, at most about `limit` characters."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception as error:  # a __str__ that raises
        text = f"<unprintable {type(value).__name__}: {type(error).__name__}>"
    text = _UNSTORABLE.sub(REPLACEMENT, text)
    if len(text) > limit:
        cut = len(text) - limit
        text = f"{text[:limit]}… [cut: {cut:,} more characters]"
    return text


def fit(value: object, limit: int) -> str:
    """`value` as text every database stores, cut hard at `limit` characters (a column's size)."""
    return clean_text(value, limit + 1)[:limit]


def clean_json(value: Any, limit: int) -> Any:
    """A JSON value every database stores, from whatever task code returned: strings cleaned,
    non-finite numbers and other objects as text, nesting cut at MAX_DEPTH. If its JSON is
    longer than `limit` characters, the start of that JSON as text, with a marker."""
    cleaned = _clean(value, 0)
    encoded = json.dumps(cleaned, ensure_ascii=False, allow_nan=False)
    if len(encoded) <= limit:
        return cleaned
    return clean_text(encoded, limit)


def _clean(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    if depth >= MAX_DEPTH:
        return f"… [cut: nested deeper than {MAX_DEPTH}]"
    if isinstance(value, dict):
        return {clean_text(key, 1000): _clean(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item, depth + 1) for item in value]
    try:
        return clean_text(repr(value), 4000)
    except Exception as error:  # a __repr__ that raises
        return f"<unprintable {type(value).__name__}: {type(error).__name__}>"


# -- what a person or a service sent: refused with a one-line reason ------------------------------


def check_text(value: str, what: str) -> str:
    """Refuse text a database cannot store (PostgreSQL refuses NUL; lone surrogates are not
    Unicode text at all)."""
    if _UNSTORABLE.search(value):
        raise InvalidInput(f"{what} holds characters that are not valid text (NUL or a lone surrogate)")
    return value


def check_json(value: Any, what: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Refuse JSON a database cannot store or a reader cannot parse: non-finite numbers, text
    with NUL or lone surrogates, nesting deeper than `max_depth`, values that are not JSON."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidInput(f"{what} are nested deeper than {max_depth} levels")
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{what} hold a number JSON cannot carry ({item!r}): only finite numbers")
        elif isinstance(item, str):
            check_text(item, what)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidInput(f"{what} have a key that is not text: {key!r:.40}")
                check_text(key, what)
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
        else:
            raise InvalidInput(f"{what} hold a {type(item).__name__}, which is not JSON")
    return value
