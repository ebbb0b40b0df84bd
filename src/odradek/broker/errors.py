"""The error boundary: every exception raised while serving a request becomes a Kafka error code
here, and only here, in the form the request's version knows.

Newer Kafka versions introduced codes that older clients do not understand; Kafka answers those
clients with the older code that meant the same. :data:`_DOWNGRADES` is that table, the one place
such rewrites live.
"""

from __future__ import annotations

import logging

from odradek.cluster.store import StoreUnavailable
from odradek.errors import ErrorCode, KafkaError

__all__ = ["compatible_code", "error_code_for", "error_of"]

log = logging.getLogger("odradek.broker")

_PRODUCE, _INIT_PRODUCER_ID, _ADD_PARTITIONS_TO_TXN, _ADD_OFFSETS_TO_TXN, _END_TXN = 0, 22, 24, 25, 26

#: (api key, code) -> (first version that receives ``code`` as it is, the code older versions get).
_DOWNGRADES: dict[tuple[int, ErrorCode], tuple[int, ErrorCode]] = {
    # PRODUCER_FENCED (KIP-588) is known from these versions on.
    (_INIT_PRODUCER_ID, ErrorCode.producer_fenced): (4, ErrorCode.invalid_producer_epoch),
    (_ADD_PARTITIONS_TO_TXN, ErrorCode.producer_fenced): (2, ErrorCode.invalid_producer_epoch),
    (_ADD_OFFSETS_TO_TXN, ErrorCode.producer_fenced): (2, ErrorCode.invalid_producer_epoch),
    (_END_TXN, ErrorCode.producer_fenced): (2, ErrorCode.invalid_producer_epoch),
    # Produce never answers PRODUCER_FENCED: a fenced producer's batch is INVALID_PRODUCER_EPOCH.
    (_PRODUCE, ErrorCode.producer_fenced): (1 << 15, ErrorCode.invalid_producer_epoch),
    # TRANSACTION_ABORTABLE (KIP-890) reaches only clients that know it.
    (_PRODUCE, ErrorCode.transaction_abortable): (11, ErrorCode.invalid_txn_state),
    (_ADD_PARTITIONS_TO_TXN, ErrorCode.transaction_abortable): (5, ErrorCode.invalid_txn_state),
}


def compatible_code(api_key: int, version: int, code: ErrorCode) -> ErrorCode:
    """``code`` as a client speaking ``api_key`` in ``version`` understands it."""
    rule = _DOWNGRADES.get((api_key, code))
    if rule is not None and version < rule[0]:
        return rule[1]
    return code


def error_code_for(
    exc: BaseException, *, context: str = "", api_key: int = -1, version: int = 0
) -> ErrorCode:
    """Map ``exc`` to its Kafka error code (in the form ``api_key`` at ``version`` knows, when
    given); anything unexpected is logged with its traceback and answered with
    UNKNOWN_SERVER_ERROR."""
    if isinstance(exc, KafkaError):
        return compatible_code(api_key, version, exc.code)
    if isinstance(exc, StoreUnavailable):
        # etcd did not answer (or the answer was lost): the client may retry.
        log.warning("metadata store unavailable%s: %s", f" in {context}" if context else "", exc)
        return ErrorCode.request_timed_out
    log.error("unexpected error%s", f" in {context}" if context else "", exc_info=exc)
    return ErrorCode.unknown_server_error


def error_of(
    exc: BaseException, *, context: str = "", api_key: int = -1, version: int = 0
) -> tuple[ErrorCode, str | None]:
    """:func:`error_code_for` and the message to send with it (a ``KafkaError``'s own; none
    for an unexpected exception): for handlers that answer each part of a request (a group, a
    topic, a transactional id) with its own error."""
    code = error_code_for(exc, context=context, api_key=api_key, version=version)
    return code, exc.message if isinstance(exc, KafkaError) else None
