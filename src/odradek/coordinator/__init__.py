"""Coordinators: state machines whose state lives in internal topics and is rebuilt by replay.

Nothing here does I/O or reads the clock: time comes in as ``now_ms`` (or through a
:class:`~odradek.coordinator.timer.Timer` that the owner advances). Operations return the records
to write with their response (:class:`~odradek.coordinator.runtime.CoordinatorResult`); the
:class:`~odradek.coordinator.runtime.CoordinatorRuntime` writes them through a writer the owner
injects and then replays them. :mod:`odradek.broker` drives it from its event loop.
"""
