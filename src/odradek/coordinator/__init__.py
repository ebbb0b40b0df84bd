"""Coordinators: state machines whose state lives in internal topics and is rebuilt by replay.

Nothing here does I/O or reads the clock: time comes in as ``now_ms`` (or through a
:class:`~odradek.coordinator.timer.Timer` that the owner advances) and writes go out through a
writer the owner injects. :mod:`odradek.broker` drives them from its event loop.
"""
