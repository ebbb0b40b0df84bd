"""Cluster metadata: topics, partitions, ids; local file store today, etcd later."""
