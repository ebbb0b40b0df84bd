"""Typed exceptions that carry a Kafka error code.

Core code raises these; the broker's single error boundary (``odradek.broker.errors``) turns any
exception into a per-partition or per-request Kafka error code, falling back to
UNKNOWN_SERVER_ERROR with a log line for anything that is not a ``KafkaError``.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

__all__ = [
    "ErrorCode",
    "KafkaError",
    "CorruptRecordError",
    "FetchSessionIdNotFoundError",
    "InvalidRecordError",
    "RecordTooLargeError",
    "RecordListTooLargeError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "InvalidProducerEpochError",
    "UnknownProducerIdError",
    "InvalidTimestampError",
    "UnsupportedForMessageFormatError",
    "InvalidConfigError",
    "InvalidTopicError",
    "UnknownTopicOrPartitionError",
    "UnknownTopicIdError",
    "TopicAlreadyExistsError",
    "InvalidPartitionsError",
    "InvalidReplicationFactorError",
    "PolicyViolationError",
    "KafkaStorageError",
    "InvalidRequestError",
    "NotLeaderOrFollowerError",
    "FencedLeaderEpochError",
    "UnknownLeaderEpochError",
    "UnsupportedVersionError",
    "InvalidRequiredAcksError",
    "ClusterAuthorizationError",
    "UnsupportedCompressionTypeError",
    "DuplicateSequenceError",
    "CorruptFrameError",
    "FrameTooLargeError",
    "TopicDeletionDisabledError",
    "InvalidReplicaAssignmentError",
    "NoReassignmentInProgressError",
    "ElectionNotNeededError",
    "PreferredLeaderNotAvailableError",
    "EligibleLeadersNotAvailableError",
    "UnsupportedEndpointTypeError",
    "MismatchedEndpointTypeError",
    "UnknownMemberIdError",
    "IllegalGenerationError",
    "RebalanceInProgressError",
    "FencedInstanceIdError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "NotCoordinatorError",
    "GroupIdNotFoundError",
    "NonEmptyGroupError",
    "FencedMemberEpochError",
    "StaleMemberEpochError",
    "UnreleasedInstanceIdError",
    "GroupMaxSizeReachedError",
    "InvalidSessionTimeoutError",
    "InconsistentGroupProtocolError",
    "InvalidGroupIdError",
    "MemberIdRequiredError",
    "UnsupportedAssignorError",
    "GroupSubscribedToTopicError",
    "OffsetMetadataTooLargeError",
    "InvalidRegularExpressionError",
    "InvalidCommitOffsetSizeError",
    "UnstableOffsetCommitError",
    "ConcurrentTransactionsError",
    "InvalidTxnStateError",
    "InvalidProducerIdMappingError",
    "InvalidTransactionTimeoutError",
    "ProducerFencedError",
    "TransactionalIdNotFoundError",
    "TransactionCoordinatorFencedError",
    "TransactionAbortableError",
    "NotEnoughReplicasError",
    "NotEnoughReplicasAfterAppendError",
    "OffsetNotAvailableError",
    "RequestTimedOutError",
]


class KafkaError(Exception):
    """An error with a Kafka error code; the message is sent to clients where the API allows."""

    code: ErrorCode = ErrorCode.unknown_server_error

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.name)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code.name


class CorruptRecordError(KafkaError):
    code = ErrorCode.corrupt_message


class InvalidRecordError(KafkaError):
    """A batch refused for what it holds. When particular records are to blame,
    ``record_errors`` names them (KIP-467): (index of the record in its batch, why), so a produce
    answer can fail those records alone and the rest of the batch as collateral."""

    code = ErrorCode.invalid_record

    def __init__(self, message: str = "", record_errors: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(message)
        self.record_errors = record_errors


class RecordTooLargeError(KafkaError):
    code = ErrorCode.message_too_large


class RecordListTooLargeError(KafkaError):
    code = ErrorCode.record_list_too_large


class FetchSessionIdNotFoundError(KafkaError):
    """The fetch session a request names is not kept (odradek keeps none: KIP-227 sessions are
    answered with session id 0)."""

    code = ErrorCode.fetch_session_id_not_found


class OffsetOutOfRangeError(KafkaError):
    code = ErrorCode.offset_out_of_range


class OutOfOrderSequenceError(KafkaError):
    code = ErrorCode.out_of_order_sequence_number


class InvalidProducerEpochError(KafkaError):
    code = ErrorCode.invalid_producer_epoch


class UnknownProducerIdError(KafkaError):
    code = ErrorCode.unknown_producer_id


class InvalidTimestampError(KafkaError):
    code = ErrorCode.invalid_timestamp


class UnsupportedForMessageFormatError(KafkaError):
    code = ErrorCode.unsupported_for_message_format


class InvalidConfigError(KafkaError):
    code = ErrorCode.invalid_config


class InvalidTopicError(KafkaError):
    code = ErrorCode.invalid_topic_exception


class UnknownTopicOrPartitionError(KafkaError):
    code = ErrorCode.unknown_topic_or_partition


class UnknownTopicIdError(KafkaError):
    code = ErrorCode.unknown_topic_id


class TopicAlreadyExistsError(KafkaError):
    code = ErrorCode.topic_already_exists


class InvalidPartitionsError(KafkaError):
    code = ErrorCode.invalid_partitions


class InvalidReplicationFactorError(KafkaError):
    code = ErrorCode.invalid_replication_factor


class PolicyViolationError(KafkaError):
    code = ErrorCode.policy_violation


class KafkaStorageError(KafkaError):
    code = ErrorCode.kafka_storage_error


class InvalidRequestError(KafkaError):
    code = ErrorCode.invalid_request


class RequestTimedOutError(KafkaError):
    code = ErrorCode.request_timed_out


class NotLeaderOrFollowerError(KafkaError):
    code = ErrorCode.not_leader_or_follower


class FencedLeaderEpochError(KafkaError):
    code = ErrorCode.fenced_leader_epoch


class UnknownLeaderEpochError(KafkaError):
    code = ErrorCode.unknown_leader_epoch


class UnsupportedVersionError(KafkaError):
    code = ErrorCode.unsupported_version


class InvalidRequiredAcksError(KafkaError):
    code = ErrorCode.invalid_required_acks


class ClusterAuthorizationError(KafkaError):
    code = ErrorCode.cluster_authorization_failed


class UnsupportedCompressionTypeError(KafkaError):
    code = ErrorCode.unsupported_compression_type


class DuplicateSequenceError(KafkaError):
    code = ErrorCode.duplicate_sequence_number


class CorruptFrameError(Exception):
    """A request frame that cannot be parsed; the connection it came on is closed."""


class FrameTooLargeError(CorruptFrameError):
    """A frame larger than ``socket.request.max.bytes``; the connection is closed."""


class TopicDeletionDisabledError(KafkaError):
    code = ErrorCode.topic_deletion_disabled


class InvalidReplicaAssignmentError(KafkaError):
    code = ErrorCode.invalid_replica_assignment


class NoReassignmentInProgressError(KafkaError):
    """A cancellation (AlterPartitionReassignments with null replicas) of a partition that is
    not being reassigned."""

    code = ErrorCode.no_reassignment_in_progress


class ElectionNotNeededError(KafkaError):
    """ElectLeaders: the preferred replica already leads (PREFERRED) or the partition has a
    leader (UNCLEAN)."""

    code = ErrorCode.election_not_needed


class PreferredLeaderNotAvailableError(KafkaError):
    code = ErrorCode.preferred_leader_not_available


class EligibleLeadersNotAvailableError(KafkaError):
    code = ErrorCode.eligible_leaders_not_available


class UnsupportedEndpointTypeError(KafkaError):
    code = ErrorCode.unsupported_endpoint_type


class MismatchedEndpointTypeError(KafkaError):
    code = ErrorCode.mismatched_endpoint_type


# -- group coordinator ----------------------------------------------------------------------


class UnknownMemberIdError(KafkaError):
    code = ErrorCode.unknown_member_id


class IllegalGenerationError(KafkaError):
    code = ErrorCode.illegal_generation


class RebalanceInProgressError(KafkaError):
    code = ErrorCode.rebalance_in_progress


class FencedInstanceIdError(KafkaError):
    code = ErrorCode.fenced_instance_id


class CoordinatorLoadInProgressError(KafkaError):
    code = ErrorCode.coordinator_load_in_progress


class CoordinatorNotAvailableError(KafkaError):
    code = ErrorCode.coordinator_not_available


class NotCoordinatorError(KafkaError):
    code = ErrorCode.not_coordinator


class GroupIdNotFoundError(KafkaError):
    code = ErrorCode.group_id_not_found


class NonEmptyGroupError(KafkaError):
    code = ErrorCode.non_empty_group


class FencedMemberEpochError(KafkaError):
    code = ErrorCode.fenced_member_epoch


class StaleMemberEpochError(KafkaError):
    code = ErrorCode.stale_member_epoch


class UnreleasedInstanceIdError(KafkaError):
    code = ErrorCode.unreleased_instance_id


class GroupMaxSizeReachedError(KafkaError):
    code = ErrorCode.group_max_size_reached


class InvalidSessionTimeoutError(KafkaError):
    code = ErrorCode.invalid_session_timeout


class InconsistentGroupProtocolError(KafkaError):
    code = ErrorCode.inconsistent_group_protocol


class InvalidGroupIdError(KafkaError):
    code = ErrorCode.invalid_group_id


class MemberIdRequiredError(KafkaError):
    code = ErrorCode.member_id_required


class UnsupportedAssignorError(KafkaError):
    code = ErrorCode.unsupported_assignor


class GroupSubscribedToTopicError(KafkaError):
    code = ErrorCode.group_subscribed_to_topic


class OffsetMetadataTooLargeError(KafkaError):
    code = ErrorCode.offset_metadata_too_large


class InvalidRegularExpressionError(KafkaError):
    code = ErrorCode.invalid_regular_expression


class InvalidCommitOffsetSizeError(KafkaError):
    code = ErrorCode.invalid_commit_offset_size


class UnstableOffsetCommitError(KafkaError):
    code = ErrorCode.unstable_offset_commit


# -- transactions ---------------------------------------------------------------------------


class ConcurrentTransactionsError(KafkaError):
    code = ErrorCode.concurrent_transactions


class InvalidTxnStateError(KafkaError):
    code = ErrorCode.invalid_txn_state


class InvalidProducerIdMappingError(KafkaError):
    code = ErrorCode.invalid_producer_id_mapping


class InvalidTransactionTimeoutError(KafkaError):
    code = ErrorCode.invalid_transaction_timeout


class ProducerFencedError(KafkaError):
    code = ErrorCode.producer_fenced


class TransactionalIdNotFoundError(KafkaError):
    code = ErrorCode.transactional_id_not_found


class TransactionCoordinatorFencedError(KafkaError):
    code = ErrorCode.transaction_coordinator_fenced


class TransactionAbortableError(KafkaError):
    code = ErrorCode.transaction_abortable


class NotEnoughReplicasError(KafkaError):
    code = ErrorCode.not_enough_replicas


class NotEnoughReplicasAfterAppendError(KafkaError):
    """acks=all: the batch was appended, but the ISR shrank below ``min.insync.replicas``
    before it was replicated (retriable; a retry may duplicate without idempotence)."""

    code = ErrorCode.not_enough_replicas_after_append


class OffsetNotAvailableError(KafkaError):
    """ListOffsets on a leader whose high watermark has not yet reached the start of its
    epoch (KIP-207): the answer could go backwards (retriable)."""

    code = ErrorCode.offset_not_available
