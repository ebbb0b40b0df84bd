"""Cluster metadata: the :class:`~odradek.cluster.store.ClusterStore` interface with etcd's
semantics, its in-process implementation for a single node and its etcd implementation."""
