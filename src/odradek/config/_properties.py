"""Java-properties syntax (``server.properties``), as ``java.util.Properties.load`` reads it."""

from __future__ import annotations

import re

from odradek.config._types import ConfigError, java_trim

__all__ = ["parse_properties"]

_PROPERTY_WHITESPACE = " \t\f"
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _ends_with_continuation(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _unescape(text: str, line_no: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        escaped = text[i + 1]
        if escaped == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ConfigError(None, f"line {line_no}: malformed \\uXXXX escape")
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(_SIMPLE_ESCAPES.get(escaped, escaped))
            i += 2
    return "".join(out)


def _split_entry(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            i += 2
            continue
        if char in "=:" or char in _PROPERTY_WHITESPACE:
            break
        i += 1
    key = line[:i]
    rest = line[i:].lstrip(_PROPERTY_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_PROPERTY_WHITESPACE)
    return key, rest


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java-properties text: ``key=value``, ``key: value`` or ``key value``; ``#``/``!``
    comment lines; blank lines; a line ending in an odd number of backslashes continues on the next
    (whose leading whitespace is dropped); ``\\t \\n \\r \\f \\uXXXX`` escapes. Only ``\\n``,
    ``\\r`` and ``\\r\\n`` end a line. Values are trimmed as Java's ``String.trim`` does
    (characters up to U+0020); a repeated key keeps its last value."""
    lines = _LINE_BREAK_RE.split(text.removeprefix("\ufeff"))
    result: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line_no = i + 1
        line = lines[i].lstrip(_PROPERTY_WHITESPACE)
        i += 1
        if not line or line[0] in "#!":
            continue
        while _ends_with_continuation(line):
            line = line[:-1]
            if i >= len(lines):
                break
            line += lines[i].lstrip(_PROPERTY_WHITESPACE)
            i += 1
        raw_key, raw_value = _split_entry(line)
        result[_unescape(raw_key, line_no)] = java_trim(_unescape(raw_value, line_no))
    return result
