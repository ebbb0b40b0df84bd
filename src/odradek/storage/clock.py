"""Moved to :mod:`odradek.clock`; kept while branches that import it are merged."""

from odradek.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
