"""Text the database can store: PostgreSQL's text and jsonb refuse U+0000 (NUL), and a lone surrogate
(U+D800 to U+DFFF, which Python's json module lets through from a "\\ud800" escape) has no UTF-8 form.

Input is checked with these before anything reaches the database, so a bad value is a 4xx that names
its field instead of a 500, or a value cut short at the NUL by the driver.
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def unstorable_at(text: str) -> int | None:
    """The index of the first character the database cannot store, or None."""
    if text.isascii():  # the common case: one C-speed scan for NUL
        index = text.find("\x00")
        return None if index < 0 else index
    found = _UNSTORABLE_RE.search(text)
    return None if found is None else found.start()


def unstorable_message(text: str) -> str | None:
    """Why `text` cannot be stored (naming the character and where it is), or None when it can."""
    index = unstorable_at(text)
    if index is None:
        return None
    code = ord(text[index])
    what = "NUL" if code == 0 else "a lone surrogate, not a character"
    return f"Contains U+{code:04X} ({what}) at character {index + 1}, which cannot be stored; remove it."


def printable(text: str) -> str:
    """`text` with unstorable characters written as escapes (\\u0000): for names shown in error messages."""
    if unstorable_at(text) is None:
        return text
    return _UNSTORABLE_RE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def storable(value: Any) -> Any:
    """A JSON value with every unstorable character (in strings and keys) replaced by U+FFFD.

    For copies kept only to be shown (a rejected payload, a file's sample rows), never for data.
    """
    if isinstance(value, str):
        return value if unstorable_at(value) is None else _UNSTORABLE_RE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def has_unstorable(value: Any) -> bool:
    """Whether any string or key in a JSON value holds a character the database cannot store."""
    if isinstance(value, str):
        return unstorable_at(value) is not None
    if isinstance(value, dict):
        return any(has_unstorable(key) or has_unstorable(item) for key, item in value.items())
    if isinstance(value, list):
        return any(has_unstorable(item) for item in value)
    return False


def unstorable_problems(value: Any, path: str = "") -> dict[str, list[str]]:
    """`{field path: [message]}` for every string and key of a JSON body the database cannot store."""
    problems: dict[str, list[str]] = {}
    if isinstance(value, str):
        message = unstorable_message(value)
        if message is not None:
            problems[path] = [message]
    elif isinstance(value, dict):
        for key, item in value.items():
            name = printable(str(key))
            key_path = f"{path}.{name}" if path else name
            message = unstorable_message(key) if isinstance(key, str) else None
            if message is not None:
                problems[key_path] = [f"The name {message[0].lower()}{message[1:]}"]
            problems.update(unstorable_problems(item, key_path))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.update(unstorable_problems(item, f"{path}[{index}]" if path else str(index)))
    return problems
