"""One module per Kafka API; each exposes ``API``, an :class:`~odradek.broker.registry.ApiHandler`."""
