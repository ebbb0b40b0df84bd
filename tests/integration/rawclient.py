"""A minimal blocking Kafka client over kio codecs, for requests real clients never send."""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.serial import entity_reader, entity_writer

from odradek.protocol.messages import request_schema, response_schema


class RawClient:
    def __init__(self, bootstrap: str, client_id: str = "raw") -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.client_id = client_id
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, body: Any) -> int:
        self.correlation_id += 1
        schema = type(body)
        header_cls = schema.__header_schema__
        buf = io.BytesIO()
        entity_writer(header_cls)(buf, header_cls(
            request_api_key=schema.__api_key__,
            request_api_version=schema.__version__,
            correlation_id=self.correlation_id,
            client_id=self.client_id,
        ))
        entity_writer(schema)(buf, body)
        payload = buf.getvalue()
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        return self.correlation_id

    def receive(self, api_key: int, version: int) -> Any:
        size = struct.unpack(">i", self._exactly(4))[0]
        frame = self._exactly(size)
        schema = response_schema(api_key, version)
        header_cls = schema.__header_schema__
        if api_key == 18:
            from kio.schema.response_header.v0.header import ResponseHeader

            header_cls = ResponseHeader
        header, n = entity_reader(header_cls)(frame, 0)
        body, _ = entity_reader(schema)(frame, n)
        return body

    def request(self, body: Any) -> Any:
        self.send(body)
        return self.receive(type(body).__api_key__, type(body).__version__)

    def _exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def request_class(api_key: int, version: int) -> Any:
    schema = request_schema(api_key, version)
    assert schema is not None
    return schema
