"""The error boundary: every exception raised while serving a request becomes a Kafka error code
here, and only here."""

from __future__ import annotations

import logging

from odradek.errors import ErrorCode, KafkaError

__all__ = ["error_code_for"]

log = logging.getLogger("odradek.broker")


def error_code_for(exc: BaseException, *, context: str = "") -> ErrorCode:
    """Map ``exc`` to its Kafka error code; anything unexpected is logged with its traceback and
    answered with UNKNOWN_SERVER_ERROR."""
    if isinstance(exc, KafkaError):
        return exc.code
    log.error("unexpected error%s", f" in {context}" if context else "", exc_info=exc)
    return ErrorCode.unknown_server_error
