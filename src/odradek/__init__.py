"""odradek: a durable, partitioned commit log that speaks the Apache Kafka wire protocol."""

__all__ = ["__version__"]

__version__ = "0.1.0"
