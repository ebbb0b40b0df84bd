"""The client side of the Kafka protocol, sans-IO: a request body (a ``kio`` entity) into a
size-prefixed frame, and a response frame back into its correlation id and body. What a broker
needs to talk to another broker (WriteTxnMarkers from the transaction coordinator); the server
side is :mod:`odradek.protocol.messages`.

Request headers are the schema's own (v1 for non-flexible versions, v2 for flexible ones);
response headers too, except ApiVersions, whose response header is always v0 (so that a client
can read it before it knows the broker's versions).
"""

from __future__ import annotations

import struct
from typing import Any

from kio.static.primitive import i16, i32

from odradek.errors import CorruptFrameError
from odradek.protocol.messages import API_VERSIONS_KEY, reader_for, response_schema, writer_for
from odradek.protocol.precheck import check_response

__all__ = ["decode_response", "encode_request"]

_SIZE = struct.Struct(">i")
_CORRELATION_ID = struct.Struct(">i")




class _Buffer:
    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray(b"\0\0\0\0")  # the size prefix, filled in at the end

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.data += data
        return len(data)


def encode_request(body: Any, correlation_id: int, client_id: str | None) -> bytes:
    """The size-prefixed frame of request ``body`` (a ``kio`` request entity)."""
    schema = type(body)
    header_schema = schema.__header_schema__
    out = _Buffer()
    writer_for(header_schema)(out, header_schema(
        request_api_key=i16(schema.__api_key__),
        request_api_version=i16(schema.__version__),
        correlation_id=i32(correlation_id),
        client_id=client_id,
    ))
    writer_for(schema)(out, body)
    _SIZE.pack_into(out.data, 0, len(out.data) - 4)
    return bytes(out.data)


def decode_response(frame: bytes | memoryview, api_key: int, api_version: int) -> tuple[int, Any]:
    """(correlation id, body) of one response frame (without its size prefix) to a request of
    ``api_key`` at ``api_version``. Raises :class:`CorruptFrameError` for bytes that are not
    such a response.

    kio decodes the body directly; only when it fails is the frame walked as requests are
    (:mod:`odradek.protocol.precheck`), which either finds it corrupt or takes out the tagged
    fields the version does not define (in the header too) for kio to try again: Kafka ignores
    such tags (KIP-482), kio refuses them, and walking every answer first would cost several
    times kio's own decoding (``bench/decode_requests.py``).
    """
    if isinstance(frame, memoryview) and not frame.readonly:
        frame = frame.toreadonly()  # kio reads only read-only buffers
    schema = response_schema(api_key, api_version)
    header_flexible = api_key != API_VERSIONS_KEY and bool(schema.__header_schema__.__flexible__)
    try:
        (correlation_id,) = _CORRELATION_ID.unpack_from(frame, 0)
    except struct.error as e:
        raise CorruptFrameError(f"response frame of {len(frame)} bytes: {e}") from None
    try:
        # The header: the correlation id, then (when flexible) tagged fields, in practice none.
        if not header_flexible:
            body_start = 4
        elif len(frame) > 4 and frame[4] == 0:
            body_start = 5
        else:  # tagged fields in the header: the walk skips them
            body_start = -1
        if body_start > 0:
            try:
                body, _ = reader_for(schema)(frame, body_start)
                return int(correlation_id), body
            except Exception:  # noqa: BLE001 - corrupt, or a tag kio does not know: walk it
                pass
        body_start, frame = check_response(frame, schema, header_flexible)
        body, _ = reader_for(schema)(frame, body_start)
    except CorruptFrameError as e:
        raise CorruptFrameError(f"malformed response api_key={api_key} v{api_version}: {e}") from e
    except Exception as e:
        raise CorruptFrameError(
            f"malformed response api_key={api_key} v{api_version}: {e!r}"
        ) from e
    return int(correlation_id), body
