"""Fault-injection tests: a real cluster (3 etcd members, 3 broker processes) under kill -9,
pauses, network partitions and etcd failures, with real clients whose every operation is
recorded to a history file that :mod:`chaos.checker` then checks (docs/CHAOS.md)."""
