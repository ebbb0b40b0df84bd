"""``odradek transactions list|describe|describe-producers|find-hanging|abort``: see and resolve
transactions (KIP-664), like Kafka's ``kafka-transactions.sh``.

librdkafka has no admin calls for these APIs, so the commands speak them through the small
blocking client in :mod:`odradek.cli._raw`, with the same connection options as every client
command. They work against any Kafka 3.0+ broker, not only odradek:

- ``list`` asks every broker (each coordinates its own transactional ids) with ListTransactions;
- ``describe`` finds the transactional id's coordinator and asks it with DescribeTransactions;
- ``describe-producers`` asks a partition's leader with DescribeProducers;
- ``find-hanging`` looks, as Kafka's tool does, for transactions open in a partition for longer
  than the longest transaction time-out whose producer's coordinator does not list the
  partition in its transaction (so no marker will ever come), and
- ``abort`` ends one such transaction by sending the partition's leader an ABORT marker
  (WriteTxnMarkers), naming the producer or the offset its transaction started at.

Column names and states are Kafka's. Each command runs on the calling thread, opens its own
connections and closes them before returning; nothing is kept locally.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cli._common import MISSING, REQUEST_TIMEOUT_S, CliError, Subparsers, format_table, warn
from odradek.cli._options import ClientOptions, client_options
from odradek.cli._raw import (
    DESCRIBE_PRODUCERS,
    DESCRIBE_TRANSACTIONS,
    FIND_COORDINATOR,
    LIST_TRANSACTIONS,
    WRITE_TXN_MARKERS,
    Cluster,
    Connection,
    read_describe_transactions,
    request_module,
)

__all__ = [
    "TRANSACTION_STATES",
    "DEFAULT_MAX_TRANSACTION_TIMEOUT_MIN",
    "AbortSpec",
    "OpenTransaction",
    "TransactionOwner",
    "abort_spec_for_offset",
    "add_commands",
    "hanging_transactions",
    "open_transactions",
    "parse_transaction_states",
]

#: Kafka's transaction state names, which ``--state`` takes.
TRANSACTION_STATES = (
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
)
#: Kafka's default ``transaction.max.timeout.ms`` (15 minutes): no transaction may run longer.
DEFAULT_MAX_TRANSACTION_TIMEOUT_MIN = 15
#: FindCoordinator answers that go away by themselves (the coordinator is loading or moving).
_RETRIABLE = frozenset(
    {
        ErrorCode.coordinator_not_available,
        ErrorCode.coordinator_load_in_progress,
        ErrorCode.not_coordinator,
    }
)
_TRANSACTION_KEY_TYPE = 1
_MS = datetime.timedelta(milliseconds=1)
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


# -- pure helpers -------------------------------------------------------------------------------


def parse_transaction_states(items: Iterable[str]) -> list[str]:
    """Kafka's state names from ``items`` (any case, repeated or comma-separated), in the
    order first given. Raises ValueError for a name Kafka does not have."""
    by_lower = {s.lower(): s for s in TRANSACTION_STATES}
    chosen: dict[str, None] = {}
    for item in items:
        for name in item.split(","):
            state = by_lower.get(name.strip().lower())
            if state is None:
                valid = ", ".join(TRANSACTION_STATES)
                raise ValueError(
                    f"unknown transaction state {name.strip()!r}; valid states: {valid}"
                )
            chosen[state] = None
    return list(chosen)


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    """A producer's transaction open in one partition, as its leader describes it."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int  # -1: no marker of this producer seen yet
    start_offset: int
    last_timestamp: int


@dataclass(frozen=True, slots=True)
class TransactionOwner:
    """What a transaction coordinator says of the transactional id a producer id belongs to:
    the producer id it uses now and the partitions its transaction still has to mark."""

    producer_id: int
    partitions: frozenset[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class AbortSpec:
    """The ABORT marker that ends a transaction in one partition."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int


def open_transactions(topic: str, partition: int, producers: Iterable[Any]) -> list[OpenTransaction]:
    """The open transactions among a partition's DescribeProducers ``producers``."""
    return [
        OpenTransaction(
            topic,
            partition,
            p.producer_id,
            p.producer_epoch,
            p.coordinator_epoch,
            p.current_txn_start_offset,
            p.last_timestamp,
        )
        for p in producers
        if p.current_txn_start_offset >= 0
    ]


def hanging_transactions(
    candidates: Sequence[OpenTransaction], owners: Mapping[int, TransactionOwner]
) -> list[OpenTransaction]:
    """Those of ``candidates`` (already open longer than any transaction may run) that no
    coordinator will complete. ``owners`` maps a producer id to the state of the
    transactional id that listed it; a candidate hangs when its producer id has no owner, the
    owner has moved on to another producer id, or the owner's transaction does not include
    the partition (its marker was lost or never sent). Kafka's rule."""
    out = []
    for txn in candidates:
        owner = owners.get(txn.producer_id)
        if (
            owner is None
            or owner.producer_id != txn.producer_id
            or (txn.topic, txn.partition) not in owner.partitions
        ):
            out.append(txn)
    return out


def abort_spec_for_offset(
    topic: str, partition: int, producers: Iterable[Any], start_offset: int
) -> AbortSpec:
    """The marker that aborts the transaction starting at ``start_offset``, from the
    partition's DescribeProducers ``producers``. A producer that has had no marker yet has
    coordinator epoch -1; its marker is written with 0, as Kafka's tool does. Raises
    ValueError when no open transaction starts there."""
    for p in producers:
        if p.current_txn_start_offset == start_offset:
            return AbortSpec(
                topic, partition, p.producer_id, p.producer_epoch, max(p.coordinator_epoch, 0)
            )
    raise ValueError(f"no open transaction starts at offset {start_offset} in {topic}-{partition}")


def _code_text(code: ErrorCode, message: str | None = None) -> str:
    name = code.name.upper()
    return f"{message} ({name})" if message else name


def _ms(moment: datetime.datetime | None) -> int:
    return -1 if moment is None else (moment - _EPOCH) // _MS


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- argument parsing ---------------------------------------------------------------------------


def add_commands(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """Register ``transactions`` on the top-level subparsers; ``common`` holds the connection
    options every client command shares."""
    txns = sub.add_parser(
        "transactions", help="list and describe transactions; find and abort hanging ones"
    )
    actions = txns.add_subparsers(dest="transactions_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "list", parents=[common], help="one line per transactional id: coordinator, producer, state"
    )
    p.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help="only transactions in this state (repeatable or comma-separated: "
        + ", ".join(TRANSACTION_STATES) + ")",
    )
    p.add_argument(
        "--producer-id",
        action="append",
        default=[],
        type=int,
        metavar="ID",
        help="only the transactional id using this producer id (repeatable)",
    )
    p.set_defaults(func=_list)

    p = actions.add_parser(
        "describe",
        parents=[common],
        help="a transactional id's producer, state, time-out and partitions",
    )
    p.add_argument("transactional_id", metavar="TRANSACTIONAL_ID")
    p.set_defaults(func=_describe)

    p = actions.add_parser(
        "describe-producers",
        parents=[common],
        help="the producers a partition knows and where their open transactions start",
    )
    p.add_argument("--topic", required=True, metavar="TOPIC")
    p.add_argument("--partition", required=True, type=int, metavar="P")
    p.set_defaults(func=_describe_producers)

    p = actions.add_parser(
        "find-hanging",
        parents=[common],
        help="transactions open longer than any may run that no coordinator will complete",
    )
    p.add_argument("--topic", required=True, metavar="TOPIC")
    p.add_argument("--partition", type=int, metavar="P", help="default: every partition")
    p.add_argument(
        "--max-transaction-timeout",
        type=int,
        default=DEFAULT_MAX_TRANSACTION_TIMEOUT_MIN,
        metavar="MINUTES",
        help="the brokers' transaction.max.timeout.ms, in minutes: only transactions open "
        f"longer are considered (default: {DEFAULT_MAX_TRANSACTION_TIMEOUT_MIN})",
    )
    p.set_defaults(func=_find_hanging)

    p = actions.add_parser(
        "abort",
        parents=[common],
        help="abort a hanging transaction in one partition",
        description=(
            "Write an ABORT marker for a producer's open transaction in TOPIC-P. Name the "
            "transaction by the offset it started at (looked up with describe-producers), or "
            "give the producer id, producer epoch and coordinator epoch yourself."
        ),
    )
    p.add_argument("--topic", required=True, metavar="TOPIC")
    p.add_argument("--partition", required=True, type=int, metavar="P")
    p.add_argument("--start-offset", type=int, metavar="OFFSET")
    p.add_argument("--producer-id", type=int, metavar="ID")
    p.add_argument("--producer-epoch", type=int, metavar="EPOCH")
    p.add_argument("--coordinator-epoch", type=int, metavar="EPOCH")
    p.set_defaults(func=_abort)


# -- broker calls -------------------------------------------------------------------------------


def _cluster(options: ClientOptions) -> Cluster:
    return Cluster(
        options.bootstrap,
        connect_timeout=options.connect_timeout,
        request_timeout=REQUEST_TIMEOUT_S,
    )


def _leaders(cluster: Cluster, topic: str) -> dict[int, int]:
    """Partition -> leader node id of ``topic``; CliError when it does not exist."""
    answer = cluster.metadata([topic])
    meta = next((t for t in answer.topics if t.name == topic), None)
    if meta is None or meta.error_code == ErrorCode.unknown_topic_or_partition:
        raise CliError(f"topic {topic!r} does not exist")
    if meta.error_code != ErrorCode.none:
        raise CliError(f"topic {topic!r}: {_code_text(meta.error_code)}")
    return {p.partition_index: p.leader_id for p in meta.partitions}


def _leader(cluster: Cluster, topic: str, partition: int) -> Connection:
    leaders = _leaders(cluster, topic)
    leader = leaders.get(partition)
    if leader is None:
        raise CliError(f"topic {topic!r} has no partition {partition} (it has {len(leaders)})")
    if leader < 0:
        raise CliError(f"partition {topic}-{partition} has no leader")
    return cluster.broker(leader)


def _describe_producers_on(
    conn: Connection, topic: str, partitions: Sequence[int]
) -> dict[int, tuple[Any, ...]]:
    """Partition -> active producers, from one leader; CliError on a partition's error."""
    m = request_module(DESCRIBE_PRODUCERS)
    answer = conn.request(
        m.DescribeProducersRequest(
            topics=(m.TopicRequest(name=topic, partition_indexes=tuple(partitions)),)
        )
    )
    out: dict[int, tuple[Any, ...]] = {}
    for t in answer.topics:
        for p in t.partitions:
            if p.error_code != ErrorCode.none:
                raise CliError(
                    f"partition {topic}-{p.partition_index}: "
                    f"{_code_text(p.error_code, p.error_message)}"
                )
            out[p.partition_index] = tuple(sorted(p.active_producers, key=lambda s: s.producer_id))
    return out


def _list_transactions(
    cluster: Cluster, states: Sequence[str], producer_ids: Sequence[int]
) -> tuple[list[tuple[int, Any]], list[str]]:
    """(coordinator node id, listed transaction) from every broker, and the state filters some
    broker did not know."""
    m = request_module(LIST_TRANSACTIONS)
    request = m.ListTransactionsRequest(
        state_filters=tuple(states), producer_id_filters=tuple(producer_ids)
    )
    found: list[tuple[int, Any]] = []
    unknown: dict[str, None] = {}
    for node_id in sorted(cluster.brokers()):
        answer = cluster.broker(node_id).request(request)
        if answer.error_code != ErrorCode.none:
            raise CliError(
                f"listing transactions on broker {node_id}: {_code_text(answer.error_code)}"
            )
        unknown.update(dict.fromkeys(answer.unknown_state_filters))
        found += [(node_id, t) for t in answer.transaction_states]
    return found, list(unknown)


def _coordinator(cluster: Cluster, transactional_id: str) -> tuple[int, Connection]:
    """The node id of ``transactional_id``'s coordinator and a connection to it."""
    m = request_module(FIND_COORDINATOR)
    request = m.FindCoordinatorRequest(key=transactional_id, key_type=_TRANSACTION_KEY_TYPE)
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while True:
        answer = cluster.any_broker().request(request)
        if answer.error_code == ErrorCode.none:
            return answer.node_id, cluster.connect(answer.host, answer.port)
        if answer.error_code not in _RETRIABLE or time.monotonic() >= deadline:
            raise CliError(
                f"finding the coordinator of transactional id {transactional_id!r}: "
                f"{_code_text(answer.error_code, answer.error_message)}"
            )
        time.sleep(0.1)


def _describe_transaction(conn: Connection, transactional_id: str) -> Any:
    """The DescribeTransactions state of ``transactional_id``; CliError on its error."""
    m = request_module(DESCRIBE_TRANSACTIONS)
    answer = conn.request(
        m.DescribeTransactionsRequest(transactional_ids=(transactional_id,)),
        decode=read_describe_transactions,
    )
    state = next(
        (s for s in answer.transaction_states if s.transactional_id == transactional_id), None
    )
    if state is None:
        raise CliError(f"transactional id {transactional_id!r}: the coordinator did not answer")
    if state.error_code == ErrorCode.transactional_id_not_found:
        raise CliError(f"transactional id {transactional_id!r} does not exist")
    if state.error_code != ErrorCode.none:
        raise CliError(f"transactional id {transactional_id!r}: {_code_text(state.error_code)}")
    return state


def _partitions_of(state: Any) -> list[tuple[str, int]]:
    return sorted((t.topic, p) for t in state.topics for p in t.partitions)


# -- list ---------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    try:
        states = parse_transaction_states(args.state)
    except ValueError as e:
        raise CliError(str(e)) from None
    with _cluster(client_options(args)) as cluster:
        found, unknown = _list_transactions(cluster, states, args.producer_id)
    for name in unknown:
        warn(args, f"the broker does not know the transaction state {name!r}")
    rows = sorted(
        ((t.transactional_id, node, t.producer_id, t.transaction_state) for node, t in found),
        key=lambda row: row[0],
    )
    header = ("TransactionalId", "Coordinator", "ProducerId", "TransactionState")
    for line in format_table(header, rows):
        print(line)
    return 0


# -- describe -----------------------------------------------------------------------------------


def _describe(args: argparse.Namespace) -> int:
    transactional_id = args.transactional_id
    with _cluster(client_options(args)) as cluster:
        node_id, conn = _coordinator(cluster, transactional_id)
        state = _describe_transaction(conn, transactional_id)
    start_ms = _ms(state.transaction_start_time)
    started = start_ms >= 0
    partitions = _partitions_of(state)
    header = (
        "CoordinatorId", "TransactionalId", "ProducerId", "ProducerEpoch", "TransactionState",
        "TransactionTimeoutMs", "CurrentTransactionStartTimeMs", "TransactionDurationMs",
        "TopicPartitions",
    )
    row = (
        node_id,
        state.transactional_id,
        state.producer_id,
        state.producer_epoch,
        state.transaction_state,
        state.transaction_timeout // _MS,
        start_ms if started else MISSING,
        max(_now_ms() - start_ms, 0) if started else MISSING,
        ",".join(f"{t}-{p}" for t, p in partitions) or MISSING,
    )
    for line in format_table(header, [row]):
        print(line)
    return 0


# -- describe-producers -------------------------------------------------------------------------


def _describe_producers(args: argparse.Namespace) -> int:
    topic, partition = args.topic, args.partition
    with _cluster(client_options(args)) as cluster:
        producers = _describe_producers_on(_leader(cluster, topic, partition), topic, [partition])
    header = (
        "ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence",
        "LastTimestamp", "CurrentTransactionStartOffset",
    )
    rows = [
        (
            p.producer_id,
            p.producer_epoch,
            p.coordinator_epoch,
            p.last_sequence,
            p.last_timestamp,
            p.current_txn_start_offset if p.current_txn_start_offset >= 0 else MISSING,
        )
        for p in producers.get(partition, ())
    ]
    for line in format_table(header, rows):
        print(line)
    return 0


# -- find-hanging -------------------------------------------------------------------------------


def _owners(cluster: Cluster, producer_ids: Sequence[int]) -> dict[int, TransactionOwner]:
    """Producer id -> the state of the transactional id a coordinator lists it under."""
    listed, _ = _list_transactions(cluster, (), producer_ids)
    owners: dict[int, TransactionOwner] = {}
    for _node, t in listed:
        _, conn = _coordinator(cluster, t.transactional_id)
        try:
            state = _describe_transaction(conn, t.transactional_id)
        except CliError:
            continue  # gone since it was listed: nothing will complete its transactions
        owners[t.producer_id] = TransactionOwner(state.producer_id, frozenset(_partitions_of(state)))
    return owners


def _find_hanging(args: argparse.Namespace) -> int:
    topic = args.topic
    if args.max_transaction_timeout < 0:
        raise CliError("--max-transaction-timeout must not be negative")
    max_ms = args.max_transaction_timeout * 60_000
    with _cluster(client_options(args)) as cluster:
        leaders = _leaders(cluster, topic)
        if args.partition is not None:
            if args.partition not in leaders:
                raise CliError(
                    f"topic {topic!r} has no partition {args.partition} (it has {len(leaders)})"
                )
            leaders = {args.partition: leaders[args.partition]}
        by_leader: dict[int, list[int]] = {}
        for partition, leader in sorted(leaders.items()):
            if leader < 0:
                raise CliError(f"partition {topic}-{partition} has no leader")
            by_leader.setdefault(leader, []).append(partition)
        now = _now_ms()
        candidates: list[OpenTransaction] = []
        for leader, partitions in by_leader.items():
            found = _describe_producers_on(cluster.broker(leader), topic, partitions)
            for partition in partitions:
                candidates += [
                    txn
                    for txn in open_transactions(topic, partition, found.get(partition, ()))
                    if now - txn.last_timestamp > max_ms
                ]
        owners = _owners(cluster, sorted({c.producer_id for c in candidates})) if candidates else {}
    hanging = sorted(
        hanging_transactions(candidates, owners), key=lambda t: (t.partition, t.start_offset)
    )
    if not hanging:
        print("No hanging transactions found.")
        return 0
    header = (
        "Topic", "Partition", "ProducerId", "ProducerEpoch", "CoordinatorEpoch", "StartOffset",
        "LastTimestamp", "Duration(min)",
    )
    rows = [
        (
            t.topic, t.partition, t.producer_id, t.producer_epoch, t.coordinator_epoch,
            t.start_offset, t.last_timestamp, max(now - t.last_timestamp, 0) // 60_000,
        )
        for t in hanging
    ]
    for line in format_table(header, rows):
        print(line)
    return 0


# -- abort --------------------------------------------------------------------------------------


def _named_spec(args: argparse.Namespace) -> AbortSpec | None:
    """The marker the options name, or None when the transaction is named by --start-offset
    (looked up later); CliError for a combination that names nothing or too much."""
    named = (args.producer_id, args.producer_epoch, args.coordinator_epoch)
    if args.start_offset is not None:
        if any(v is not None for v in named):
            raise CliError(
                "give either --start-offset or --producer-id, --producer-epoch and "
                "--coordinator-epoch, not both"
            )
        if args.start_offset < 0:
            raise CliError("--start-offset must not be negative")
        return None
    producer_id, producer_epoch, coordinator_epoch = named
    if producer_id is None or producer_epoch is None or coordinator_epoch is None:
        raise CliError(
            "give --start-offset, or all of --producer-id, --producer-epoch and "
            "--coordinator-epoch"
        )
    if producer_id < 0 or not 0 <= producer_epoch < 2**15 or coordinator_epoch < 0:
        raise CliError("the producer id and epochs must not be negative (epochs < 32768)")
    return AbortSpec(args.topic, args.partition, producer_id, producer_epoch, coordinator_epoch)


def _write_abort_marker(conn: Connection, spec: AbortSpec) -> None:
    m = request_module(WRITE_TXN_MARKERS)
    answer = conn.request(
        m.WriteTxnMarkersRequest(
            markers=(
                m.WritableTxnMarker(
                    producer_id=spec.producer_id,
                    producer_epoch=spec.producer_epoch,
                    transaction_result=False,
                    topics=(
                        m.WritableTxnMarkerTopic(
                            name=spec.topic, partition_indexes=(spec.partition,)
                        ),
                    ),
                    coordinator_epoch=spec.coordinator_epoch,
                ),
            )
        )
    )
    codes = [
        p.error_code
        for marker in answer.markers
        for t in marker.topics
        for p in t.partitions
        if t.name == spec.topic and p.partition_index == spec.partition
    ]
    if not codes:
        raise CliError(f"partition {spec.topic}-{spec.partition}: the broker did not answer")
    code = codes[0]
    where = f"aborting producer {spec.producer_id}'s transaction in {spec.topic}-{spec.partition}"
    if code == ErrorCode.invalid_producer_epoch:
        raise CliError(
            f"{where}: producer epoch {spec.producer_epoch} is older than the partition's "
            f"({_code_text(code)})"
        )
    if code == ErrorCode.transaction_coordinator_fenced:
        raise CliError(
            f"{where}: coordinator epoch {spec.coordinator_epoch} is older than the last "
            f"marker's ({_code_text(code)})"
        )
    if code != ErrorCode.none:
        raise CliError(f"{where}: {_code_text(code)}")


def _abort(args: argparse.Namespace) -> int:
    topic, partition = args.topic, args.partition
    spec = _named_spec(args)
    with _cluster(client_options(args)) as cluster:
        conn = _leader(cluster, topic, partition)
        if spec is None:
            producers = _describe_producers_on(conn, topic, [partition]).get(partition, ())
            try:
                spec = abort_spec_for_offset(topic, partition, producers, args.start_offset)
            except ValueError as e:
                raise CliError(str(e)) from None
        _write_abort_marker(conn, spec)
    print(
        f"Aborted the transaction of producer {spec.producer_id} (epoch {spec.producer_epoch}) "
        f"in {topic}-{partition}."
    )
    return 0
