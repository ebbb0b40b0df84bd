"""Deterministic simulation of an odradek cluster (see docs/ARCHITECTURE.md, "Deterministic
simulation"): brokers, the metadata store, clients and faults in one process, on one thread,
over a simulated network and clock driven by a seed."""
