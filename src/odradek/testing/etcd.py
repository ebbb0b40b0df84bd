"""Real etcd processes for tests: re-exported from :mod:`odradek.cluster.etcd_process`, where
the command line can use them too."""

from __future__ import annotations

from odradek.cluster.etcd_process import (
    EtcdCluster,
    EtcdProcess,
    etcd_binary,
    free_port,
    free_ports,
)

__all__ = ["EtcdProcess", "EtcdCluster", "etcd_binary", "free_port", "free_ports"]
