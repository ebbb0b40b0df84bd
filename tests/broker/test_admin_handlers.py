"""Admin handlers through the dispatcher, for what no real client sends: every declared version,
topic ids in DeleteTopics, malformed requests and Kafka's edge-case error codes.

Each test starts a broker on a loop that is not running and hands encoded request frames to its
dispatcher, as a connection would; an awaitable answer (topic changes go through the cluster
store) is run on the broker's loop.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer

from odradek.broker.app import Broker
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.handlers import (
    alter_configs,
    create_partitions,
    delete_records,
    delete_topics,
    describe_cluster,
    describe_configs,
    describe_log_dirs,
    incremental_alter_configs,
)
from odradek.broker.handlers._config_resources import AlterOp, incremental_topic_configs
from odradek.broker.registry import ApiHandler, handlers
from odradek.broker.runner import local_config
from odradek.clock import ManualClock
from odradek.config import ConfigSource
from odradek.errors import ErrorCode, InvalidConfigError
from odradek.protocol.build import build
from odradek.protocol.messages import Request, encode_response, request_schema, response_schema

ADMIN_APIS: dict[str, ApiHandler] = {
    m.__name__.rsplit(".", 1)[1]: m.API
    for m in (
        delete_topics, create_partitions, describe_configs, alter_configs,
        incremental_alter_configs, delete_records, describe_cluster, describe_log_dirs,
    )
}
TOPIC, BROKER, BROKER_LOGGER, GROUP = 2, 4, 8, 32
NONE = ErrorCode.none
T0 = datetime.timedelta(0)


def rmod(api: ApiHandler, version: int) -> ModuleType:
    schema = request_schema(api.api_key, version)
    assert schema is not None
    return sys.modules[schema.__module__]


def _write(cls: type[Any], value: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(cls)(buf, value)
    return buf.getvalue()


@dataclass
class Admin:
    """A started broker (not serving) and its dispatcher."""

    broker: Broker
    dispatcher: Dispatcher
    loop: asyncio.AbstractEventLoop
    correlation_id: int = 0

    def call(self, api: ApiHandler, version: int, make: Callable[[ModuleType], Any]) -> Any:
        """Encode the request ``make`` builds from the version's classes, dispatch it and decode
        the answer (checking the correlation id and that every byte was used)."""
        body = make(rmod(api, version))
        self.correlation_id += 1
        header_cls = type(body).__header_schema__
        frame = _write(header_cls, header_cls(
            request_api_key=api.api_key,
            request_api_version=version,
            correlation_id=self.correlation_id,
            client_id="test",
        )) + _write(type(body), body)
        answer = self.dispatcher(frame)
        if not isinstance(answer, bytes):
            answer = self.loop.run_until_complete(answer)  # type: ignore[arg-type]
        assert isinstance(answer, bytes)
        (size,) = struct.unpack_from(">i", answer)
        assert size == len(answer) - 4
        schema = response_schema(api.api_key, version)
        header_cls = ResponseHeaderV1 if schema.__flexible__ else ResponseHeaderV0
        header: Any
        header, n = entity_reader(header_cls)(answer[4:], 0)
        response, m = entity_reader(schema)(answer[4:], n)
        assert header.correlation_id == self.correlation_id
        assert n + m == size
        return response

    def topic(self, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.loop.run_until_complete(
            self.broker.topics.create(name, num_partitions=partitions, configs=configs or {})
        )
        return name


def _start(data_dir: Path, **properties: str) -> Iterator[Admin]:
    loop = asyncio.new_event_loop()
    broker = Broker(local_config(data_dir, **properties), clock=ManualClock(1_700_000_000_000))
    loop.run_until_complete(broker.start())
    try:
        yield Admin(broker, Dispatcher(broker), loop)
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    yield from _start(tmp_path / "data")


@pytest.fixture
def restore_log_levels() -> Iterator[None]:
    names = ["odradek.broker", "odradek"]
    saved = {n: logging.getLogger(n).level for n in names}
    root = logging.getLogger().level
    yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)
    logging.getLogger().setLevel(root)


# -- registration and every version -------------------------------------------------------------


def test_versions_served() -> None:
    table = {api.name: (api.min_version, api.max_version) for api in handlers().values()}
    assert table["DeleteTopics"] == (1, 6)
    assert table["CreatePartitions"] == (0, 3)
    assert table["DescribeConfigs"] == (1, 4)
    assert table["AlterConfigs"] == (0, 2)
    assert table["IncrementalAlterConfigs"] == (0, 1)
    assert table["DeleteRecords"] == (0, 2)
    assert table["DescribeCluster"] == (0, 2)
    assert table["DescribeLogDirs"] == (1, 4)


def _sample(name: str, topic: str) -> Callable[[ModuleType], Any]:
    """A valid request of every version of one admin API, about ``topic`` (1 partition)."""

    def make(m: ModuleType) -> Any:
        if name == "delete_topics":
            if hasattr(m, "DeleteTopicState"):
                return m.DeleteTopicsRequest(
                    topics=(m.DeleteTopicState(name=topic, topic_id=uuid.UUID(int=0)),),
                    timeout=T0,
                )
            return m.DeleteTopicsRequest(topic_names=(topic,), timeout=T0)
        if name == "create_partitions":
            return m.CreatePartitionsRequest(
                topics=(m.CreatePartitionsTopic(name=topic, count=2, assignments=None),),
                timeout=T0, validate_only=False,
            )
        if name == "describe_configs":
            return build(m.DescribeConfigsRequest, resources=(
                m.DescribeConfigsResource(resource_type=TOPIC, resource_name=topic,
                                          configuration_keys=None),
            ), include_synonyms=True, include_documentation=True)
        if name == "alter_configs":
            return m.AlterConfigsRequest(resources=(m.AlterConfigsResource(
                resource_type=TOPIC, resource_name=topic,
                configs=(m.AlterableConfig(name="retention.ms", value="1000"),),
            ),), validate_only=False)
        if name == "incremental_alter_configs":
            return m.IncrementalAlterConfigsRequest(resources=(m.AlterConfigsResource(
                resource_type=TOPIC, resource_name=topic,
                configs=(m.AlterableConfig(name="retention.ms", config_operation=0,
                                           value="1000"),),
            ),), validate_only=False)
        if name == "delete_records":
            return m.DeleteRecordsRequest(topics=(m.DeleteRecordsTopic(
                name=topic, partitions=(m.DeleteRecordsPartition(partition_index=0, offset=-1),),
            ),), timeout=T0)
        if name == "describe_cluster":
            return build(m.DescribeClusterRequest, include_cluster_authorized_operations=True,
                         endpoint_type=1, include_fenced_brokers=True)
        assert name == "describe_log_dirs"
        return m.DescribeLogDirsRequest(topics=None)

    return make


def _codes(entity: Any) -> list[ErrorCode]:
    if isinstance(entity, tuple):
        return [c for item in entity for c in _codes(item)]
    if hasattr(entity, "__dataclass_fields__") and not isinstance(entity, type):
        found = []
        for field in entity.__dataclass_fields__:
            value = getattr(entity, field)
            found += [value] if isinstance(value, ErrorCode) else _codes(value)
        return found
    return []


@pytest.mark.parametrize(
    ("name", "version"),
    [(n, v) for n, api in ADMIN_APIS.items() for v in api.versions()],
)
def test_every_version_succeeds_and_encodes_its_error_form(
    admin: Admin, name: str, version: int
) -> None:
    api = ADMIN_APIS[name]
    topic = admin.topic()
    response = admin.call(api, version, _sample(name, topic))
    codes = _codes(response)
    assert codes and all(c == NONE for c in codes), codes
    # The boundary's whole-request error form encodes in this version too, and carries the code.
    body = _sample(name, topic)(rmod(api, version))
    request = Request(api.api_key, version, 1, "test", body, 0)
    error = api.error_response(request, ErrorCode.unknown_server_error)
    assert encode_response(api.api_key, 1, error)
    if name != "describe_log_dirs" or version >= 3:
        assert ErrorCode.unknown_server_error in _codes(error)


# -- DeleteTopics -------------------------------------------------------------------------------

DT = delete_topics.API
ZERO = uuid.UUID(int=0)


def _delete_v6(admin: Admin, *entries: tuple[str | None, uuid.UUID]) -> list[Any]:
    response = admin.call(DT, 6, lambda m: m.DeleteTopicsRequest(
        topics=tuple(m.DeleteTopicState(name=n, topic_id=i) for n, i in entries), timeout=T0,
    ))
    return list(response.responses)


def _id(admin: Admin, topic: str) -> uuid.UUID:
    meta = admin.broker.topics.topic(topic)
    assert meta is not None
    return meta.topic_id


def test_delete_by_topic_id(admin: Admin) -> None:
    topic = admin.topic(2)
    topic_id = _id(admin, topic)
    [result] = _delete_v6(admin, (None, topic_id))
    assert (result.error_code, result.name, result.topic_id) == (NONE, topic, topic_id)
    assert admin.broker.topics.topic(topic) is None
    assert admin.broker.logs.logs_for_topic(topic) == []
    [again] = _delete_v6(admin, (None, topic_id))
    assert again.error_code == ErrorCode.unknown_topic_id and again.name is None


def test_delete_by_name_reports_the_topic_id(admin: Admin) -> None:
    topic = admin.topic()
    topic_id = _id(admin, topic)
    [result] = _delete_v6(admin, (topic, ZERO))
    assert (result.error_code, result.topic_id) == (NONE, topic_id)
    [missing] = _delete_v6(admin, (topic, ZERO))
    assert missing.error_code == ErrorCode.unknown_topic_or_partition
    assert missing.error_message


def test_delete_topics_invalid_entries(admin: Admin) -> None:
    topic = admin.topic()
    topic_id = _id(admin, topic)
    other = admin.topic()
    other_id = _id(admin, other)
    results = _delete_v6(
        admin,
        (None, ZERO),  # neither
        (topic, topic_id),  # both
        (None, other_id), (None, other_id),  # the same id twice
    )
    assert [r.error_code for r in results] == [ErrorCode.invalid_request] * 4
    assert "Neither" in results[0].error_message
    assert "both" in results[1].error_message
    assert admin.broker.topics.topic(topic) is not None
    assert admin.broker.topics.topic(other) is not None


@pytest.mark.parametrize("id_first", [True, False])
def test_delete_name_and_id_of_one_topic_deletes_nothing(admin: Admin, id_first: bool) -> None:
    topic = admin.topic()
    entries = [(None, _id(admin, topic)), (topic, ZERO)]
    results = _delete_v6(admin, *(entries if id_first else entries[::-1]))
    assert [r.error_code for r in results] == [ErrorCode.invalid_request] * 2
    assert admin.broker.topics.topic(topic) is not None


def test_delete_duplicate_names_old_version(admin: Admin) -> None:
    topic = admin.topic()
    keep = admin.topic()
    response = admin.call(DT, 1, lambda m: m.DeleteTopicsRequest(
        topic_names=(topic, keep, topic), timeout=T0))
    codes = [(r.name, r.error_code) for r in response.responses]
    assert codes == [(topic, ErrorCode.invalid_request), (keep, NONE),
                     (topic, ErrorCode.invalid_request)]
    assert admin.broker.topics.topic(topic) is not None
    assert admin.broker.topics.topic(keep) is None


def test_delete_topics_disabled(tmp_path: Path) -> None:
    for admin in _start(tmp_path / "data", delete_topic_enable="false"):
        topic = admin.topic()

        def make(m: ModuleType) -> Any:
            return m.DeleteTopicsRequest(topic_names=(topic,), timeout=T0)  # noqa: B023

        old = admin.call(DT, 2, make)
        assert [r.error_code for r in old.responses] == [ErrorCode.invalid_request]
        new = admin.call(DT, 5, make)
        assert [r.error_code for r in new.responses] == [ErrorCode.topic_deletion_disabled]
        assert admin.broker.topics.topic(topic) is not None


# -- CreatePartitions ---------------------------------------------------------------------------

CP = create_partitions.API


def _grow(admin: Admin, topic: str, count: int, assignments: list[list[int]] | None,
          validate_only: bool = False) -> Any:
    def make(m: ModuleType) -> Any:
        given = None if assignments is None else tuple(
            m.CreatePartitionsAssignment(broker_ids=tuple(a)) for a in assignments
        )
        return m.CreatePartitionsRequest(
            topics=(m.CreatePartitionsTopic(name=topic, count=count, assignments=given),),
            timeout=T0, validate_only=validate_only,
        )

    [result] = admin.call(CP, 3, make).results
    return result


@pytest.mark.parametrize(("assignments", "fragment"), [
    ([[1]], "only 1 assignment"),
    ([[1], []], "empty replica list"),
    ([[1], [1, 1]], "more than once"),
    ([[1], [2]], "broker 2"),
])
def test_create_partitions_bad_assignments(
    admin: Admin, assignments: list[list[int]], fragment: str
) -> None:
    topic = admin.topic()
    result = _grow(admin, topic, 3, assignments)
    assert result.error_code == ErrorCode.invalid_replica_assignment
    assert fragment in result.error_message
    meta = admin.broker.topics.topic(topic)
    assert meta is not None and meta.partitions == 1


def test_create_partitions_with_assignments_and_validate_only(admin: Admin) -> None:
    topic = admin.topic()
    assert _grow(admin, topic, 3, [[1], [1]], validate_only=True).error_code == NONE
    meta = admin.broker.topics.topic(topic)
    assert meta is not None and meta.partitions == 1
    assert _grow(admin, topic, 3, [[1], [1]]).error_code == NONE
    assert admin.broker.topics.log(topic, 2).log_end_offset == 0
    # Not an increase: INVALID_PARTITIONS comes before any assignment check.
    assert _grow(admin, topic, 3, [[7]]).error_code == ErrorCode.invalid_partitions


def test_create_partitions_duplicate_topic(admin: Admin) -> None:
    topic = admin.topic()
    response = admin.call(CP, 1, lambda m: m.CreatePartitionsRequest(
        topics=tuple(m.CreatePartitionsTopic(name=topic, count=c, assignments=None)
                     for c in (2, 3)),
        timeout=T0, validate_only=False,
    ))
    assert [(r.name, r.error_code) for r in response.results] == [
        (topic, ErrorCode.invalid_request)
    ]
    meta = admin.broker.topics.topic(topic)
    assert meta is not None and meta.partitions == 1


# -- DescribeConfigs ----------------------------------------------------------------------------

DC = describe_configs.API


def _describe(admin: Admin, version: int, *resources: tuple[int, str, tuple[str, ...] | None],
              synonyms: bool = False, documentation: bool = False) -> list[Any]:
    response = admin.call(DC, version, lambda m: build(
        m.DescribeConfigsRequest,
        resources=tuple(
            m.DescribeConfigsResource(resource_type=t, resource_name=n, configuration_keys=k)
            for t, n, k in resources
        ),
        include_synonyms=synonyms,
        include_documentation=documentation,
    ))
    return list(response.results)


def test_describe_configs_errors(admin: Admin) -> None:
    results = _describe(
        admin, 4,
        (BROKER, "2", None),
        (BROKER, "one", None),
        (BROKER_LOGGER, "", None),
        (GROUP, "g", None),
        (TOPIC, "bad name", None),
        (TOPIC, "missing", None),
        (99, "x", None),
    )
    assert [r.error_code for r in results] == [
        ErrorCode.invalid_request,
        ErrorCode.invalid_request,
        ErrorCode.invalid_request,
        ErrorCode.invalid_request,
        ErrorCode.invalid_topic_exception,
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.invalid_request,
    ]
    assert all(r.configs == () and r.error_message for r in results)
    assert [(r.resource_type, r.resource_name) for r in results][:2] == [(BROKER, "2"),
                                                                         (BROKER, "one")]


def test_describe_broker_configs(admin: Admin) -> None:
    mine, defaults = _describe(admin, 1, (BROKER, "1", None), (BROKER, "", None))
    assert mine.error_code == NONE and defaults.error_code == NONE
    assert defaults.configs == ()  # no dynamic cluster-wide defaults
    entries = {c.name: c for c in mine.configs}
    assert entries["delete.topic.enable"].value == "true"
    assert all(c.read_only for c in mine.configs)
    assert entries["log.dirs"].config_source == ConfigSource.STATIC_BROKER_CONFIG


def test_describe_topic_configs_flags_by_version(admin: Admin) -> None:
    topic = admin.topic(configs={"retention.ms": "5000"})
    keys = ("retention.ms", "cleanup.policy", "no.such.key")
    [plain] = _describe(admin, 4, (TOPIC, topic, keys))
    assert [c.name for c in plain.configs] == ["cleanup.policy", "retention.ms"]
    retention = {c.name: c for c in plain.configs}["retention.ms"]
    assert retention.value == "5000"
    assert retention.config_source == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert retention.synonyms == () and retention.documentation is None
    assert retention.config_type == 5  # LONG

    [full] = _describe(admin, 4, (TOPIC, topic, ("retention.ms",)), synonyms=True,
                       documentation=True)
    [entry] = full.configs
    assert [s.name for s in entry.synonyms][:2] == ["retention.ms", "log.retention.hours"]
    assert entry.synonyms[0].source == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert entry.documentation

    [v1] = _describe(admin, 1, (TOPIC, topic, ()), synonyms=True)
    assert len(v1.configs) > 20 and all(c.synonyms for c in v1.configs)


def test_describe_broker_loggers(admin: Admin) -> None:
    logging.getLogger("odradek.broker")  # exists once the broker has logged anything
    [result] = _describe(admin, 2, (BROKER_LOGGER, "1", None))
    levels = {c.name: c for c in result.configs}
    assert "root" in levels and "odradek.broker" in levels
    assert levels["root"].value in {"FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"}
    assert levels["root"].config_source == ConfigSource.DYNAMIC_BROKER_LOGGER_CONFIG
    [other] = _describe(admin, 2, (BROKER_LOGGER, "2", None))
    assert other.error_code == ErrorCode.invalid_request


# -- AlterConfigs / IncrementalAlterConfigs -----------------------------------------------------

AC = alter_configs.API
IAC = incremental_alter_configs.API


def _incremental(admin: Admin, *resources: tuple[int, str, list[tuple[str, int, str | None]]],
                 validate_only: bool = False) -> list[ErrorCode]:
    response = admin.call(IAC, 1, lambda m: m.IncrementalAlterConfigsRequest(
        resources=tuple(
            m.AlterConfigsResource(resource_type=t, resource_name=n, configs=tuple(
                m.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops
            ))
            for t, n, ops in resources
        ),
        validate_only=validate_only,
    ))
    return [r.error_code for r in response.responses]


def _overrides(admin: Admin, topic: str) -> dict[str, str]:
    meta = admin.broker.topics.topic(topic)
    assert meta is not None
    return dict(meta.configs)


SET, DELETE, APPEND, SUBTRACT = AlterOp.SET, AlterOp.DELETE, AlterOp.APPEND, AlterOp.SUBTRACT


def test_incremental_alter_topic_errors_change_nothing(admin: Admin) -> None:
    topic = admin.topic(configs={"retention.ms": "1000"})
    codes = _incremental(
        admin,
        (TOPIC, topic, [("segment.ms", SET, "10"), ("segment.ms", DELETE, None)]),
        (TOPIC, topic, [("segment.ms", SET, "10")]),
    )
    assert codes == [ErrorCode.invalid_request] * 2  # the resource appears twice
    assert _incremental(admin, (TOPIC, topic, [("a", SET, None)])) == [ErrorCode.invalid_request]
    assert _incremental(admin, (TOPIC, topic, [("retention.ms", SET, "1"),
                                               ("retention.ms", DELETE, None)])) == [
        ErrorCode.invalid_request
    ]
    assert _incremental(admin, (TOPIC, topic, [("retention.ms", 9, "1")])) == [
        ErrorCode.invalid_request
    ]
    assert _incremental(admin, (TOPIC, topic, [("retention.ms", SET, "soon")])) == [
        ErrorCode.invalid_config
    ]
    assert _incremental(admin, (TOPIC, topic, [("no.such.config", SET, "1")])) == [
        ErrorCode.invalid_config
    ]
    assert _incremental(admin, (TOPIC, "missing", [("retention.ms", SET, "1")])) == [
        ErrorCode.unknown_topic_or_partition
    ]
    assert _incremental(admin, (GROUP, "g", [("x", SET, "1")])) == [ErrorCode.invalid_request]
    assert _overrides(admin, topic) == {"retention.ms": "1000"}


def test_incremental_alter_topic_list_ops(admin: Admin) -> None:
    topic = admin.topic()
    assert _incremental(admin, (TOPIC, topic, [("cleanup.policy", APPEND, "compact")])) == [NONE]
    assert _overrides(admin, topic) == {"cleanup.policy": "delete,compact"}
    log = admin.broker.topics.log(topic, 0)
    assert log.config.cleanup_policy == "delete,compact"  # the storage engine was told
    assert _incremental(admin, (TOPIC, topic, [("cleanup.policy", SUBTRACT, "delete")])) == [NONE]
    assert _overrides(admin, topic) == {"cleanup.policy": "compact"}
    assert _incremental(admin, (TOPIC, topic, [("cleanup.policy", DELETE, None)]),
                        validate_only=True) == [NONE]
    assert _overrides(admin, topic) == {"cleanup.policy": "compact"}
    assert _incremental(admin, (TOPIC, topic, [("cleanup.policy", DELETE, None)])) == [NONE]
    assert _overrides(admin, topic) == {}


def test_incremental_alter_broker_is_refused(admin: Admin) -> None:
    assert _incremental(admin, (BROKER, "", [])) == [NONE]  # nothing to change
    assert _incremental(admin, (BROKER, "1", [("log.retention.ms", SET, "1")])) == [
        ErrorCode.invalid_request
    ]
    assert _incremental(admin, (BROKER, "3", [])) == [ErrorCode.invalid_request]


@pytest.mark.usefixtures("restore_log_levels")
def test_incremental_alter_broker_loggers(admin: Admin) -> None:
    logger = logging.getLogger("odradek.broker")
    logger.setLevel(logging.WARNING)
    ok = _incremental(admin, (BROKER_LOGGER, "1", [("odradek.broker", SET, "DEBUG")]),
                      validate_only=True)
    assert ok == [NONE] and logger.level == logging.WARNING
    assert _incremental(admin, (BROKER_LOGGER, "1", [("odradek.broker", SET, "DEBUG")])) == [NONE]
    assert logger.level == logging.DEBUG
    [described] = _describe(admin, 4, (BROKER_LOGGER, "1", ("odradek.broker",)))
    assert [(c.name, c.value) for c in described.configs] == [("odradek.broker", "DEBUG")]
    assert _incremental(admin, (BROKER_LOGGER, "1", [("odradek.broker", DELETE, None)])) == [NONE]
    assert logger.level == logging.NOTSET

    refused = _incremental(
        admin,
        (BROKER_LOGGER, "1", [("odradek.broker", SET, "LOUD")]),
        (BROKER_LOGGER, "2", [("odradek.broker", SET, "INFO")]),
        (BROKER_LOGGER, "", [("odradek.broker", SET, "INFO")]),
    )
    assert refused == [ErrorCode.invalid_config, ErrorCode.invalid_request,
                       ErrorCode.invalid_request]
    cases: list[tuple[list[tuple[str, int, str | None]], ErrorCode]] = [
        ([("root", DELETE, None)], ErrorCode.invalid_request),
        ([("odradek.broker", APPEND, "INFO")], ErrorCode.invalid_request),
        ([("no.such.logger.anywhere", SET, "INFO")], ErrorCode.invalid_config),
    ]
    for ops, code in cases:
        assert _incremental(admin, (BROKER_LOGGER, "1", ops)) == [code]
    assert logger.level == logging.NOTSET


def _alter(admin: Admin, *resources: tuple[int, str, dict[str, str | None]]) -> list[ErrorCode]:
    response = admin.call(AC, 2, lambda m: m.AlterConfigsRequest(
        resources=tuple(
            m.AlterConfigsResource(resource_type=t, resource_name=n, configs=tuple(
                m.AlterableConfig(name=k, value=v) for k, v in configs.items()
            ))
            for t, n, configs in resources
        ),
        validate_only=False,
    ))
    return [r.error_code for r in response.responses]


def test_alter_configs_edge_cases(admin: Admin) -> None:
    topic = admin.topic(configs={"retention.ms": "1000"})
    assert _alter(admin, (TOPIC, topic, {"segment.ms": None})) == [ErrorCode.invalid_config]
    assert _alter(admin, (BROKER_LOGGER, "1", {"root": "INFO"})) == [ErrorCode.invalid_request]
    assert _alter(admin, (BROKER, "1", {"num.partitions": "3"})) == [ErrorCode.invalid_request]
    assert _alter(admin, (TOPIC, topic, {}), (TOPIC, topic, {})) == [ErrorCode.invalid_request] * 2
    assert _overrides(admin, topic) == {"retention.ms": "1000"}
    assert _alter(admin, (TOPIC, topic, {})) == [NONE]
    assert _overrides(admin, topic) == {}


@given(
    start=st.lists(st.sampled_from(["compact", "delete"]), unique=True, max_size=2),
    ops=st.lists(st.tuples(st.sampled_from([APPEND, SUBTRACT]),
                           st.sampled_from(["compact", "delete", "compact,delete"])),
                 max_size=6),
)
def test_list_ops_behave_like_set_operations(start: list[str], ops: list[tuple[int, str]]) -> None:
    @dataclass
    class Op:
        name: str
        config_operation: int
        value: str

    current = {"cleanup.policy": ",".join(start)} if start else {}
    expected = list(start) if start else ["delete"]  # the default when there is no override
    for kind, value in ops:
        for item in value.split(","):
            if kind == APPEND and item not in expected:
                expected.append(item)
            elif kind == SUBTRACT and item in expected:
                expected.remove(item)
    result = incremental_topic_configs(
        current, [Op("cleanup.policy", kind, value) for kind, value in ops]
    )
    if ops:
        assert result == {"cleanup.policy": ",".join(expected)}
    else:
        assert result == current


def test_list_ops_on_scalar_configs_are_invalid() -> None:
    @dataclass
    class Op:
        name: str
        config_operation: int
        value: str

    with pytest.raises(InvalidConfigError, match="not LIST"):
        incremental_topic_configs({}, [Op("retention.ms", APPEND, "1")])


# -- DeleteRecords ------------------------------------------------------------------------------

DR = delete_records.API


def _delete_records(admin: Admin, version: int, topic: str,
                    *offsets: tuple[int, int]) -> list[tuple[ErrorCode, int]]:
    response = admin.call(DR, version, lambda m: m.DeleteRecordsRequest(topics=(
        m.DeleteRecordsTopic(name=topic, partitions=tuple(
            m.DeleteRecordsPartition(partition_index=p, offset=o) for p, o in offsets
        )),
    ), timeout=T0))
    return [(r.error_code, r.low_watermark) for r in response.topics[0].partitions]


def test_delete_records_edge_cases(admin: Admin) -> None:
    topic = admin.topic(2)
    assert _delete_records(admin, 2, topic, (0, -1), (1, -2), (1, 1), (5, 0)) == [
        (NONE, 0),
        (ErrorCode.offset_out_of_range, -1),
        (ErrorCode.offset_out_of_range, -1),  # beyond the high watermark (0)
        (ErrorCode.unknown_topic_or_partition, -1),
    ]
    compacted = admin.topic(configs={"cleanup.policy": "compact"})
    assert _delete_records(admin, 0, compacted, (0, 0)) == [(ErrorCode.policy_violation, -1)]
    admin.loop.run_until_complete(
        admin.broker.topics.create("__consumer_offsets", num_partitions=1)
    )
    assert _delete_records(admin, 1, "__consumer_offsets", (0, 0)) == [
        (ErrorCode.invalid_topic_exception, -1)
    ]


# -- DescribeCluster ----------------------------------------------------------------------------

DCL = describe_cluster.API


def test_describe_cluster_answers(admin: Admin) -> None:
    v2 = admin.call(DCL, 2, lambda m: m.DescribeClusterRequest(
        include_cluster_authorized_operations=False, endpoint_type=1,
        include_fenced_brokers=True))
    assert v2.error_code == NONE and v2.endpoint_type == 1
    assert v2.cluster_id == admin.broker.metadata.cluster_id
    assert v2.controller_id == admin.broker.node_id
    assert [(b.broker_id, b.is_fenced) for b in v2.brokers] == [(1, False)]
    assert v2.cluster_authorized_operations == -(2**31)
    v0 = admin.call(DCL, 0, lambda m: m.DescribeClusterRequest(
        include_cluster_authorized_operations=True))
    assert v0.cluster_authorized_operations == describe_cluster.CLUSTER_OPERATIONS
    bits = {b for b in range(32) if v0.cluster_authorized_operations >> b & 1}
    assert bits == {5, 7, 8, 9, 10, 11, 12}


@pytest.mark.parametrize(("endpoint", "code"), [
    (2, ErrorCode.mismatched_endpoint_type),
    (0, ErrorCode.unsupported_endpoint_type),
    (9, ErrorCode.unsupported_endpoint_type),
])
def test_describe_cluster_endpoint_types(admin: Admin, endpoint: int, code: ErrorCode) -> None:
    response = admin.call(DCL, 1, lambda m: m.DescribeClusterRequest(
        include_cluster_authorized_operations=False, endpoint_type=endpoint))
    assert response.error_code == code and response.error_message
    assert response.brokers == ()


# -- DescribeLogDirs ----------------------------------------------------------------------------

DLD = describe_log_dirs.API


def test_describe_log_dirs_filters_and_totals(admin: Admin) -> None:
    a = admin.topic(2)
    b = admin.topic(1)
    everything = admin.call(DLD, 4, lambda m: m.DescribeLogDirsRequest(topics=None))
    [result] = everything.results
    assert result.log_dir == str(admin.broker.data_dir.absolute())
    assert result.total_bytes >= result.usable_bytes > 0
    listed = {t.name: [p.partition_index for p in t.partitions] for t in result.topics}
    assert listed == {a: [0, 1], b: [0]}

    some = admin.call(DLD, 1, lambda m: m.DescribeLogDirsRequest(topics=(
        m.DescribableLogDirTopic(topic=a, partitions=(1, 9)),
        m.DescribableLogDirTopic(topic="missing", partitions=(0,)),
    )))
    [result] = some.results
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in result.topics] == [
        (a, [1])
    ]
