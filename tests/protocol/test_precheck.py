"""The request bounds check: runs of fixed-size fields are checked as one step, empty tag
buffers in one test, and neither lets a short frame through."""

from __future__ import annotations

import datetime
import io
import sys
import uuid

import pytest
from kio.serial import entity_writer

from odradek.errors import CorruptFrameError
from odradek.protocol.build import build
from odradek.protocol.messages import request_schema
from odradek.protocol.precheck import _plan, check_request


def _fetch_frame(version: int, cluster_id: str | None = None) -> bytes:
    schema = request_schema(1, version)
    assert schema is not None
    m = sys.modules[schema.__module__]
    body = build(
        schema,
        cluster_id=cluster_id,
        replica_id=-1,
        replica_state=m.ReplicaState(replica_id=-1, replica_epoch=-1)
        if hasattr(m, "ReplicaState") else None,
        max_wait=datetime.timedelta(milliseconds=500), min_bytes=1, max_bytes=52428800,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=(build(m.FetchTopic, topic="t", topic_id=uuid.UUID(int=7), partitions=(build(
            m.FetchPartition, partition=0, current_leader_epoch=-1, fetch_offset=976,
            last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=1 << 20),)),),
        forgotten_topics_data=(), rack_id="r",
    )
    header = schema.__header_schema__
    out = io.BytesIO()
    entity_writer(header)(out, header(request_api_key=1, request_api_version=version,
                                      correlation_id=1, client_id="c"))
    entity_writer(schema)(out, body)
    return out.getvalue()


def test_runs_of_fixed_fields_are_one_step() -> None:
    schema = request_schema(1, 16)
    assert schema is not None
    m = sys.modules[schema.__module__]
    # partition, current_leader_epoch, fetch_offset, last_fetched_epoch, log_start_offset,
    # partition_max_bytes
    assert _plan(m.FetchPartition).steps == [("fixed", 4 + 4 + 8 + 4 + 8 + 4)]
    # max_wait .. session_epoch, then the topics array
    assert _plan(schema).steps[0] == ("fixed", 4 + 4 + 4 + 1 + 4 + 4)


# v4: not flexible, the frame ends with fixed fields; v16 without tags and with one.
@pytest.mark.parametrize(("version", "cluster_id"), [(4, None), (16, None), (16, "a-cluster")])
def test_whole_frames_pass_and_every_shorter_one_is_refused(
    version: int, cluster_id: str | None
) -> None:
    schema = request_schema(1, version)
    assert schema is not None
    frame = _fetch_frame(version, cluster_id)
    client_id, _, _ = check_request(frame, schema)
    assert client_id == "c"
    for cut in range(8, len(frame)):
        with pytest.raises(CorruptFrameError):
            check_request(frame[:cut], schema)
