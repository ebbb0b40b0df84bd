"""Pure helpers of the client commands: parsing arguments and rendering consumed records.

Nothing here touches the network, a Kafka client or the clock, so all of it is unit-testable.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ConsumedRecord",
    "TIMESTAMP_TYPE_NAMES",
    "decode_json_value",
    "encode_json_value",
    "format_json",
    "format_plain",
    "parse_assignments",
    "parse_bootstrap",
    "parse_headers",
    "parse_timestamp",
    "split_line",
]

#: librdkafka's timestamp types (TIMESTAMP_NOT_AVAILABLE, CREATE_TIME, LOG_APPEND_TIME).
TIMESTAMP_TYPE_NAMES = {0: None, 1: "CreateTime", 2: "LogAppendTime"}


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One record as the consume command prints it, independent of the client library."""

    topic: str
    partition: int
    offset: int
    timestamp_type: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def parse_assignments(items: Iterable[str], what: str) -> dict[str, str]:
    """``["k=v", ...]`` to a dict; the value may itself contain ``=``.

    Raises ValueError with a readable message on a missing ``=``, an empty key or a repeat.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{what} {item!r} is not of the form key=value")
        if key in out:
            raise ValueError(f"{what} {key!r} is given more than once")
        out[key] = value
    return out


def parse_headers(items: Iterable[str]) -> list[tuple[str, bytes]]:
    """``["k=v", ...]`` to record headers, in order; keys may repeat (Kafka allows it)."""
    out: list[tuple[str, bytes]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"header {item!r} is not of the form key=value")
        out.append((key, value.encode("utf-8")))
    return out


def parse_bootstrap(text: str) -> str:
    """Check a comma-separated list of ``HOST:PORT`` (IPv6 as ``[addr]:port``); return it tidied."""
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    if not addresses:
        raise ValueError("no bootstrap server given")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or host in ("[", "[]"):
            raise ValueError(f"bootstrap server {address!r} is not of the form HOST:PORT")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bootstrap server {address!r} has an invalid port {port!r}")
    return ",".join(addresses)


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch from a plain integer or an ISO 8601 date-time.

    A date-time without an offset is taken as UTC. Raises ValueError on anything else.
    """
    text = text.strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        if value < 0:
            raise ValueError(f"timestamp {text!r} is negative")
        return value
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither milliseconds since the epoch nor ISO 8601 "
            "(e.g. 2024-05-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    delta = moment - epoch
    millis = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if millis < 0:
        raise ValueError(f"timestamp {text!r} is before 1970")
    return millis


def split_line(line: bytes, separator: bytes | None) -> tuple[bytes | None, bytes]:
    """Split one input line (without its newline) into key and value.

    Without a separator the whole line is the value and the key is null. With one, the part
    before its first occurrence is the key; a line without the separator raises ValueError.
    """
    if separator is None:
        return None, line
    key, sep, value = line.partition(separator)
    if not sep:
        raise ValueError("no key separator on this line")
    return key, value


def encode_json_value(data: bytes | None) -> str | dict[str, str] | None:
    """Bytes as JSON: a string when they are valid UTF-8, else ``{"base64": "..."}``."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def decode_json_value(value: str | dict[str, str] | None) -> bytes | None:
    """The inverse of :func:`encode_json_value` (used by tests and scripts)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return base64.b64decode(value["base64"], validate=True)
    except (KeyError, binascii.Error) as e:
        raise ValueError(f"not an encoded byte string: {value!r}") from e


def format_json(record: ConsumedRecord) -> str:
    """One record as a single-line JSON object."""
    obj = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp if record.timestamp_type else None,
        "timestamp_type": TIMESTAMP_TYPE_NAMES.get(record.timestamp_type),
        "key": encode_json_value(record.key),
        "value": encode_json_value(record.value),
        "headers": [{"key": k, "value": encode_json_value(v)} for k, v in record.headers],
    }
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _header_text(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    if not headers:
        return b"NO_HEADERS"
    parts = [k.encode("utf-8") + b":" + (b"null" if v is None else v) for k, v in headers]
    return b",".join(parts)


def format_plain(
    record: ConsumedRecord,
    *,
    print_key: bool = False,
    print_headers: bool = False,
    print_timestamp: bool = False,
    separator: bytes = b"\t",
) -> bytes:
    """One record as Kafka's console consumer prints it: the selected fields, tab separated,
    in the order timestamp, headers, key, value; nulls print as ``null``. No newline."""
    fields: list[bytes] = []
    if print_timestamp:
        name = TIMESTAMP_TYPE_NAMES.get(record.timestamp_type)
        fields.append(f"{name}:{record.timestamp}".encode() if name else b"NO_TIMESTAMP")
    if print_headers:
        fields.append(_header_text(record.headers))
    if print_key:
        fields.append(b"null" if record.key is None else record.key)
    fields.append(b"null" if record.value is None else record.value)
    return separator.join(fields)
