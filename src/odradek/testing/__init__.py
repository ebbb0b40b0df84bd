"""Helpers for testing Kafka code against a real, in-process odradek broker."""
