"""Confluent's seven compatibility levels, built from a format's reader/writer question.

BACKWARD: the new schema reads data written with the old one. FORWARD: the old reads the new.
FULL: both. The ``_TRANSITIVE`` levels check against every earlier live version, the others
against the latest only; NONE checks nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from odradek.registry.formats import ParsedSchema, SchemaFormat

__all__ = ["DEFAULT_LEVEL", "LEVELS", "check", "check_against", "normalize_level"]

LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
DEFAULT_LEVEL = "BACKWARD"


def normalize_level(level: object) -> str | None:
    """The level named (any case), or ``None`` if it names none."""
    if not isinstance(level, str):
        return None
    upper = level.upper()
    return upper if upper in LEVELS else None


def check_against(
    level: str, fmt: SchemaFormat, new: ParsedSchema, old: ParsedSchema, old_label: str
) -> list[str]:
    """Why ``new`` breaks ``level`` against one earlier schema (direction only, not history)."""
    if level == "NONE":
        return []
    if new.schema_type != old.schema_type:
        return [f"Incompatible schema type: {new.schema_type} against {old.schema_type} ({old_label})"]
    messages: list[str] = []
    if level.startswith(("BACKWARD", "FULL")):
        messages += [
            f"{m} (new schema cannot read data written with {old_label}; {level})"
            for m in fmt.incompatibilities(new, old)
        ]
    if level.startswith(("FORWARD", "FULL")):
        messages += [
            f"{m} ({old_label} cannot read data written with the new schema; {level})"
            for m in fmt.incompatibilities(old, new)
        ]
    return messages


def check(
    level: str,
    fmt: SchemaFormat,
    new: ParsedSchema,
    earlier: Sequence[tuple[str, ParsedSchema]],
) -> list[str]:
    """Why ``new`` cannot follow ``earlier`` (labelled live versions, oldest first) under
    ``level``; empty when it can."""
    if level == "NONE" or not earlier:
        return []
    against = earlier if level.endswith("_TRANSITIVE") else earlier[-1:]
    messages: list[str] = []
    # Newest first, as Confluent reports.
    for label, old in reversed(against):
        messages += check_against(level, fmt, new, old, label)
    return messages
