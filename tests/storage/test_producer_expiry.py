"""producer.id.expiration.ms: idle producers are forgotten, open transactions are not."""

from __future__ import annotations

from storage_helpers import START_MS, OpenLog, batch

from odradek.protocol.records import encode_control_batch
from odradek.storage.log import AppendOrigin

DAY = 86_400_000


def test_idle_producer_is_forgotten_and_may_start_at_any_sequence(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(
        batch(3, producer_id=7, producer_epoch=0, base_sequence=0), leader_epoch=0
    )
    assert plog.remove_expired_producers(START_MS + DAY - 10, DAY) == 0
    assert plog.producer_entry(7) is not None
    assert plog.remove_expired_producers(START_MS + DAY + 10, DAY) == 1
    assert plog.producer_entry(7) is None
    # Forgotten: the producer's next batch is accepted whatever its sequence (KIP-360).
    info = plog.append_as_leader(
        batch(1, producer_id=7, producer_epoch=0, base_sequence=3), leader_epoch=0
    )
    assert not info.duplicate and info.first_offset == 3


def test_producer_with_an_open_transaction_is_kept(open_log: OpenLog) -> None:
    plog = open_log()
    plog.append_as_leader(
        batch(1, producer_id=9, producer_epoch=0, base_sequence=0, is_transactional=True),
        leader_epoch=0,
    )
    plog.update_high_watermark(plog.log_end_offset)
    assert plog.remove_expired_producers(START_MS + 10 * DAY, DAY) == 0
    assert plog.last_stable_offset == 0
    plog.append_as_leader(
        encode_control_batch(9, 0, commit=True, coordinator_epoch=0, timestamp=START_MS + 1),
        leader_epoch=0,
        origin=AppendOrigin.COORDINATOR,
    )
    assert plog.remove_expired_producers(START_MS + 10 * DAY, DAY) == 1
