"""An admin request's deadline: the body is cut off at the request's timeout (none given: the
default bound) with REQUEST_TIMED_OUT, an unreachable metadata store is REQUEST_TIMED_OUT saying
so, and a timeout raised by the body itself is not mistaken for the deadline."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from odradek.broker.handlers._admin_deadline import DEFAULT_TIMEOUT_S, AdminDeadline
from odradek.cluster.store import StoreUnavailable
from odradek.errors import RequestTimedOutError


def _ms(n: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=n)


def test_the_deadline_cuts_off_every_later_step() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        deadline = AdminDeadline(_ms(50))
        began = loop.time()
        with pytest.raises(RequestTimedOutError, match="within the request's timeout"):
            async with deadline.bound("creating topic 'a'"):
                await asyncio.Event().wait()  # a store that never answers
        # The deadline is the request's, not the step's: a later step is cut off at once.
        with pytest.raises(RequestTimedOutError):
            async with deadline.bound("creating topic 'b'"):
                await asyncio.sleep(10)
        return loop.time() - began

    assert asyncio.run(scenario()) < 1.0


def test_a_step_done_in_time_is_untouched() -> None:
    async def scenario() -> int:
        async with AdminDeadline(_ms(5_000)).bound("x"):
            await asyncio.sleep(0)
            return 7

    assert asyncio.run(scenario()) == 7


def test_no_timeout_falls_back_to_the_default_bound() -> None:
    async def scenario() -> float:
        deadline = AdminDeadline(_ms(0))
        return deadline._when - asyncio.get_running_loop().time()

    assert DEFAULT_TIMEOUT_S - 1 < asyncio.run(scenario()) <= DEFAULT_TIMEOUT_S


def test_an_unreachable_store_is_request_timed_out_with_its_cause() -> None:
    async def scenario() -> None:
        async with AdminDeadline(_ms(5_000)).bound("deleting topic 't'"):
            raise StoreUnavailable("etcd is unreachable (127.0.0.1:1: refused)")

    with pytest.raises(RequestTimedOutError, match="metadata store is unreachable.*refused"):
        asyncio.run(scenario())


def test_a_timeout_of_the_body_itself_is_not_the_deadline() -> None:
    async def scenario() -> None:
        async with AdminDeadline(_ms(5_000)).bound("x"):
            raise TimeoutError("inner")

    with pytest.raises(TimeoutError, match="inner"):
        asyncio.run(scenario())
