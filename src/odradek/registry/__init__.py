"""A Confluent-compatible schema registry: subjects, versions and global ids kept in the compacted
``_schemas`` topic, served over HTTP (aiohttp), with compatibility rules per format
(:mod:`odradek.registry.formats`)."""
