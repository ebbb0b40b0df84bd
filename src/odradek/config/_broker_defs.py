"""The broker settings odradek knows, each with Kafka's name, type, default and checks.

This table is the one place a broker setting's default is written: :class:`BrokerConfig`'s fields
and the topic configs' defaults are read from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from odradek.config._types import (
    DOUBLE_MAX,
    INT_MAX,
    LONG_MAX,
    AtLeast,
    Between,
    ConfigDef,
    ConfigType,
    ListOf,
    OneOf,
)

__all__ = [
    "BROKER_CONFIGS",
    "BROKER_KEY_ALIASES",
    "IGNORED_BROKER_KEYS",
    "IGNORED_BROKER_KEY_PREFIXES",
    "CLEANUP_POLICIES",
    "COMPRESSION_TYPES",
    "TIMESTAMP_TYPES",
    "MIN_SEGMENT_BYTES",
    "RACK_AWARE_REPLICA_SELECTOR",
]

#: ``replica.selector.class``'s one accepted value: Kafka's selector of a replica in the
#: client's rack (KIP-392).
RACK_AWARE_REPLICA_SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"


def _int(name: str, default: int | None, doc: str, *, minimum: int | None = None,
         synonyms: tuple[str, ...] = ()) -> ConfigDef:
    validator = AtLeast(minimum) if minimum is not None else None
    return ConfigDef(name, ConfigType.INT, default, doc, validator, synonyms)


def _long(name: str, default: int | None, doc: str, *, minimum: int | None = None,
          synonyms: tuple[str, ...] = ()) -> ConfigDef:
    validator = AtLeast(minimum) if minimum is not None else None
    return ConfigDef(name, ConfigType.LONG, default, doc, validator, synonyms)


def _bool(name: str, default: bool, doc: str) -> ConfigDef:
    return ConfigDef(name, ConfigType.BOOLEAN, default, doc)


def _table(defs: Iterable[ConfigDef]) -> dict[str, ConfigDef]:
    return {d.name: d for d in defs}


CLEANUP_POLICIES = ("compact", "delete")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
#: The smallest segment that can hold one record (Kafka 3.x's LegacyRecord.RECORD_OVERHEAD_V0).
MIN_SEGMENT_BYTES = 14

# Kafka's broker synonyms (DynamicBrokerConfig.brokerConfigSynonyms): the settings that stand in
# for one another, highest precedence first. log.flush.scheduler.interval.ms is the fallback of
# log.flush.interval.ms but has no synonyms of its own.
_ROLL = ("log.roll.ms", "log.roll.hours")
_ROLL_JITTER = ("log.roll.jitter.ms", "log.roll.jitter.hours")
_RETENTION = ("log.retention.ms", "log.retention.minutes", "log.retention.hours")
_FLUSH = ("log.flush.interval.ms", "log.flush.scheduler.interval.ms")

BROKER_CONFIGS: Mapping[str, ConfigDef] = _table([
    ConfigDef("listeners", ConfigType.LIST, ("PLAINTEXT://:9092",),
              "Where the broker accepts connections, as NAME://host:port; an empty host means all "
              "interfaces, port 0 a free port. odradek serves exactly one PLAINTEXT listener."),
    ConfigDef("advertised.listeners", ConfigType.LIST, None,
              "The listener clients are told to connect to, if it differs from `listeners`."),
    ConfigDef("listener.security.protocol.map", ConfigType.STRING,
              "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
              "Maps listener names to security protocols, as NAME:PROTOCOL pairs."),
    ConfigDef("controller.listener.names", ConfigType.LIST, (),
              "Listener names used by a KRaft controller; odradek ignores those listeners."),
    _int("node.id", 1, "This broker's id (also accepted as `broker.id`).", minimum=0),
    ConfigDef("log.dirs", ConfigType.LIST, ("/tmp/kafka-logs",),
              "The directory holding the broker's data (`log.dir` is accepted too); odradek "
              "supports exactly one."),
    ConfigDef("cluster.id", ConfigType.STRING, None,
              "The cluster id (22 characters of URL-safe base64); generated on first start if "
              "unset. An odradek extension; Kafka keeps it only in meta.properties."),
    _int("num.partitions", 1, "Partitions of an automatically created topic.", minimum=1),
    _int("default.replication.factor", 1, "Replication factor of an automatically created topic.",
         minimum=1),
    _bool("auto.create.topics.enable", True,
          "Create a topic when a client asks for metadata of, or produces to, an unknown one."),
    _bool("delete.topic.enable", True, "Allow DeleteTopics."),
    _int("max.broker.partitions", None,
         "Most partitions (all topics, internal ones included) this broker holds (KIP-578); "
         "CreateTopics beyond it fails with POLICY_VIOLATION, CreatePartitions with "
         "INVALID_PARTITIONS. Unset: half the memory the process may use at 256 KiB per "
         "partition (odradek.broker.limits).", minimum=1),
    _int("log.max.open.files", None,
         "Most segment files (.log, and the append handles of .index, .timeindex and "
         ".txnindex) held open at once; the least recently used is closed and reopened on "
         "demand. Unset: a quarter of RLIMIT_NOFILE, between 16 and 4096, leaving the rest for "
         "connections.", minimum=1),
    _long("log.page.cache.retain.bytes", 64 * 1024 * 1024,
          "Bytes at the end of a segment being appended to that are left in the OS page cache; "
          "the bytes before them are written back and dropped from it in steps of 16 MiB, so "
          "that appending recycles pages instead of taking new ones (odradek's own setting, "
          "see odradek.storage.page_cache). -1 leaves the page cache to the OS, as Kafka does.",
          minimum=-1),
    _int("log.segment.bytes", 1024 * 1024 * 1024, "Largest size of one segment file.",
         minimum=MIN_SEGMENT_BYTES),
    _long("log.roll.ms", None, "Roll a new segment after this long; overrides log.roll.hours.",
          minimum=1, synonyms=_ROLL),
    _int("log.roll.hours", 168, "Roll a new segment after this many hours.", minimum=1,
         synonyms=_ROLL),
    _long("log.roll.jitter.ms", None, "Largest random amount subtracted from the roll time; "
          "overrides log.roll.jitter.hours.", minimum=0, synonyms=_ROLL_JITTER),
    _int("log.roll.jitter.hours", 0, "Largest random number of hours subtracted from the roll "
         "time.", minimum=0, synonyms=_ROLL_JITTER),
    _long("log.retention.ms", None, "Delete segments older than this; -1 keeps them forever. "
          "Wins over log.retention.minutes and log.retention.hours.", synonyms=_RETENTION),
    _int("log.retention.minutes", None, "Retention time in minutes; wins over "
         "log.retention.hours.", synonyms=_RETENTION),
    _int("log.retention.hours", 168, "Retention time in hours.", synonyms=_RETENTION),
    _long("log.retention.bytes", -1, "Delete old segments while a partition is larger than this; "
          "-1 means no size limit."),
    _long("log.retention.check.interval.ms", 300000, "How often retention is enforced.",
          minimum=1),
    ConfigDef("log.cleanup.policy", ConfigType.LIST, ("delete",),
              "What happens to old segments: delete, compact, both, or (empty) neither.",
              ListOf(CLEANUP_POLICIES, allow_empty=True)),
    _long("log.flush.interval.messages", LONG_MAX, "fsync a partition after this many "
          "messages.", minimum=1),
    _long("log.flush.interval.ms", None, "fsync a partition when its oldest unflushed message is "
          "this old; null falls back to log.flush.scheduler.interval.ms.", minimum=0,
          synonyms=_FLUSH),
    _long("log.flush.scheduler.interval.ms", LONG_MAX, "How often to look for partitions that "
          "need an fsync; also the default of log.flush.interval.ms."),
    _int("log.index.interval.bytes", 4096, "Add an offset index entry every this many bytes.",
         minimum=0),
    _int("log.index.size.max.bytes", 10 * 1024 * 1024, "Largest size of an offset or time index.",
         minimum=4),
    ConfigDef("log.message.timestamp.type", ConfigType.STRING, "CreateTime",
              "Whether a record's timestamp is the producer's (CreateTime) or the broker's "
              "(LogAppendTime).", OneOf(TIMESTAMP_TYPES)),
    _long("log.message.timestamp.difference.max.ms", LONG_MAX, "Largest allowed distance between a "
          "CreateTime timestamp and the broker's clock.", minimum=0),
    _long("log.message.timestamp.before.max.ms", LONG_MAX, "How far in the past a CreateTime "
          "timestamp may be.", minimum=0),
    _long("log.message.timestamp.after.max.ms", LONG_MAX, "How far in the future a CreateTime "
          "timestamp may be.", minimum=0),
    _bool("log.message.downconversion.enable", True, "Down-convert batches for old fetchers."),
    _bool("log.preallocate", False, "Preallocate segment files."),
    _long("log.segment.delete.delay.ms", 60000, "Wait this long before removing a deleted "
          "segment's files.", minimum=0),
    ConfigDef("compression.type", ConfigType.STRING, "producer",
              "Compression of stored batches; 'producer' keeps what the producer sent.",
              OneOf(COMPRESSION_TYPES)),
    _int("message.max.bytes", 1048588, "Largest record batch the broker accepts.", minimum=0),
    _int("socket.request.max.bytes", 104857600, "Largest request frame the broker reads.",
         minimum=1),
    _int("fetch.max.bytes", 57671680, "Most record bytes one fetch response holds (less if the "
         "request asks for less); the first batch goes out whole even when larger.",
         minimum=1024),
    _long("queued.max.request.bytes", 104857600, "Bytes of requests being received that the "
          "broker holds at once, across all connections (a frame counts its full size from its "
          "size prefix until it is answered); reading pauses while they are taken. One request "
          "is always let through, whatever its size. -1: unbounded (Kafka's default; odradek "
          "bounds it by default).", minimum=-1),
    _long("connections.max.idle.ms", 600000, "Close a connection that has sent no request and "
          "had no response for this long; -1: never.", minimum=-1),
    _int("request.timeout.ms", 30000, "Close a connection whose request has been partly received "
         "for this long (a stalled or trickling frame).", minimum=1),
    _int("max.connections", None, "Most client connections the broker keeps; more are closed "
         "right after they are accepted. Unset: the open-file limit (raised to its hard limit at "
         "start) less a quarter of it, at least 256, kept for segment and index files.",
         minimum=0),
    _int("max.connections.per.ip", INT_MAX, "Most connections from one IP address; more are "
         "closed right after they are accepted.", minimum=0),
    _int("min.insync.replicas", 1, "Replicas that must have a write for acks=all.", minimum=1),
    _long("replica.lag.time.max.ms", 30000, "A follower that has not caught up with the "
          "leader's log end offset for this long leaves the ISR.", minimum=1),
    _bool("unclean.leader.election.enable", False, "Allow an out-of-sync replica to lead."),
    _bool("auto.leader.rebalance.enable", True, "The controller moves leadership back to each "
          "partition's preferred replica (its first) when a broker leads too few of its own."),
    _long("leader.imbalance.check.interval.seconds", 300, "How often the controller checks the "
          "leaders' balance.", minimum=1),
    _int("leader.imbalance.per.broker.percentage", 10, "The share of a broker's preferred "
         "partitions it may not lead before the controller elects their preferred leaders.",
         minimum=0),
    ConfigDef("replica.selector.class", ConfigType.STRING, None,
              "Which replica a consumer (Fetch v11+) should read from (KIP-392): "
              f"{RACK_AWARE_REPLICA_SELECTOR} names a replica in the client's rack "
              "(client.rack); unset, consumers read from the leader.",
              OneOf((RACK_AWARE_REPLICA_SELECTOR,))),
    # The follower's fetchers (broker/replica_fetcher.py), Kafka's names and defaults.
    _int("num.replica.fetchers", 1, "Fetchers (connections) per leader broker that fetch the "
         "partitions this broker follows from it.", minimum=1),
    _int("replica.fetch.max.bytes", 1048576, "Record bytes a follower asks for per partition "
         "(the first batch comes whole even when larger).", minimum=0),
    _int("replica.fetch.response.max.bytes", 10485760, "Record bytes a follower asks for per "
         "fetch, over all partitions.", minimum=0),
    _int("replica.fetch.wait.max.ms", 500, "How long the leader may hold a follower's fetch "
         "that found less than replica.fetch.min.bytes.", minimum=0),
    _int("replica.fetch.min.bytes", 1, "Record bytes a follower's fetch waits for.", minimum=1),
    _int("replica.fetch.backoff.ms", 1000, "Pause before a follower fetches a partition again "
         "after an error.", minimum=0),
    _int("replica.socket.timeout.ms", 30000, "How long a follower waits for the leader's answer "
         "to a fetch before it drops the connection.", minimum=1),
    _int("replica.socket.receive.buffer.bytes", 4 << 20, "SO_RCVBUF of a follower's "
         "connections to its leaders, -1 for the system's default (also used when the value is "
         "more than net.core.rmem_max, where setting it would cap it and stop autotuning). odradek's default is 4 MiB, not Kafka's 64 KiB: with room for a "
         "whole 1 MB answer the leader's sendfile puts it in the socket at once and the follower "
         "reads it in one or two reads, where a socket grown by the kernel took a few "
         "round trips between the two processes (about half a millisecond of every acks=all "
         "round on loopback).", minimum=-1),
    _int("offsets.topic.num.partitions", 50, "Partitions of __consumer_offsets.", minimum=1),
    ConfigDef("offsets.topic.replication.factor", ConfigType.SHORT, 3,
              "Replication factor of __consumer_offsets. Unless set, min(3, live brokers) when "
              "the topic is created (1 on a single node); set, creating it waits for that many "
              "brokers.", AtLeast(1)),
    _int("offsets.retention.minutes", 10080, "Keep committed offsets of an empty group this "
         "long.", minimum=1),
    _long("offsets.retention.check.interval.ms", 600000, "How often stale offsets are removed.",
          minimum=1),
    _int("transaction.state.log.num.partitions", 50, "Partitions of __transaction_state.",
         minimum=1),
    ConfigDef("transaction.state.log.replication.factor", ConfigType.SHORT, 3,
              "Replication factor of __transaction_state. Unless set, min(3, live brokers) when "
              "the topic is created (1 on a single node); set, creating it waits for that many "
              "brokers.", AtLeast(1)),
    _int("transaction.state.log.min.isr", 2, "min.insync.replicas of __transaction_state. Unless "
         "set, at most its replication factor.", minimum=1),
    _int("transactional.id.expiration.ms", 604800000, "Forget a transactional id after this long "
         "without activity.", minimum=1),
    _int("transaction.abort.timed.out.transaction.cleanup.interval.ms", 10000, "How often "
         "transactions past their timeout are aborted.", minimum=1),
    _int("transaction.remove.expired.transaction.cleanup.interval.ms", 3600000, "How often "
         "transactional ids past transactional.id.expiration.ms are removed.", minimum=1),
    _int("transaction.max.timeout.ms", 900000, "Largest transaction timeout a producer may ask "
         "for.", minimum=1),
    _int("producer.id.expiration.check.interval.ms", 600000, "How often idle producer ids "
         "are forgotten.", minimum=1),
    _int("producer.id.expiration.ms", 86400000, "Forget an idle producer id's state after this "
         "long.", minimum=1),
    _int("group.initial.rebalance.delay.ms", 3000, "How long a new group waits for more members "
         "before its first rebalance.", minimum=0),
    _int("group.min.session.timeout.ms", 6000, "Smallest session timeout a member may ask for."),
    _int("group.max.session.timeout.ms", 1800000, "Largest session timeout a member may ask "
         "for."),
    _int("group.max.size", INT_MAX, "Most members one consumer group may have.", minimum=1),
    ConfigDef("group.coordinator.rebalance.protocols", ConfigType.LIST, ("classic", "consumer"),
              "Group protocols the coordinator serves.", ListOf(("classic", "consumer"))),
    _int("group.consumer.session.timeout.ms", 45000, "Session timeout of KIP-848 consumer group "
         "members.", minimum=1),
    _int("group.consumer.min.session.timeout.ms", 45000, "Smallest session timeout of a consumer "
         "group.", minimum=1),
    _int("group.consumer.max.session.timeout.ms", 60000, "Largest session timeout of a consumer "
         "group.", minimum=1),
    _int("group.consumer.heartbeat.interval.ms", 5000, "Heartbeat interval given to KIP-848 "
         "consumer group members.", minimum=1),
    _int("group.consumer.min.heartbeat.interval.ms", 5000, "Smallest heartbeat interval of a "
         "consumer group.", minimum=1),
    _int("group.consumer.max.heartbeat.interval.ms", 15000, "Largest heartbeat interval of a "
         "consumer group.", minimum=1),
    _int("group.consumer.max.size", INT_MAX, "Most members one KIP-848 consumer group may have.",
         minimum=1),
    ConfigDef("group.consumer.assignors", ConfigType.LIST, ("uniform", "range"),
              "Server-side assignors of KIP-848 consumer groups; the first is the default.",
              ListOf(("uniform", "range"))),
    _bool("log.cleaner.enable", True, "Run the log cleaner (needed for compacted topics)."),
    _int("log.cleaner.threads", 1, "Threads compacting logs.", minimum=0),
    _long("log.cleaner.backoff.ms", 15000, "Pause of the cleaner when no log needs cleaning.",
          minimum=0),
    _long("log.cleaner.dedupe.buffer.size", 128 * 1024 * 1024, "Memory for deduplicating keys "
          "during compaction, across all cleaner threads."),
    ConfigDef("log.cleaner.io.max.bytes.per.second", ConfigType.DOUBLE, DOUBLE_MAX,
              "Throttle on the cleaner's reads plus writes."),
    ConfigDef("log.cleaner.min.cleanable.ratio", ConfigType.DOUBLE, 0.5,
              "Smallest ratio of dirty to total log that makes a log worth compacting.",
              Between(0, 1)),
    _long("log.cleaner.delete.retention.ms", 86400000, "Keep tombstones of compacted topics this "
          "long.", minimum=0),
    _long("log.cleaner.min.compaction.lag.ms", 0, "A record stays uncompacted at least this long.",
          minimum=0),
    _long("log.cleaner.max.compaction.lag.ms", LONG_MAX, "A record becomes eligible for compaction "
          "after at most this long.", minimum=1),
    # odradek's own (Kafka has no scrubber); named in the style of log.cleaner.*.
    _bool("log.scrubber.enable", True, "Verify the CRCs of closed segments in the background "
          "and report corrupt batches."),
    _long("log.scrubber.bytes.per.second", 1024 * 1024, "Most bytes the scrubber reads per "
          "second.", minimum=1),
    _long("log.scrubber.interval.ms", 3600000, "Pause between the end of one scrub pass over "
          "every closed segment and the start of the next.", minimum=0),
    # The cluster (issue 12): metadata in etcd; odradek's own keys, except Kafka's broker.rack
    # and broker.session.timeout.ms.
    ConfigDef("etcd.endpoints", ConfigType.LIST, (),
              "Client URLs of the etcd cluster that holds the cluster's metadata "
              "(http://host:2379,…); empty: a single node, with its metadata in process."),
    ConfigDef("etcd.prefix", ConfigType.STRING, "/odradek",
              "The etcd key prefix under which this cluster's metadata lives (one cluster per "
              "prefix)."),
    ConfigDef("broker.rack", ConfigType.STRING, None,
              "The broker's rack, registered with it and used to spread replicas across racks."),
    _bool("controlled.shutdown.enable", True,
          "On a clean shutdown (SIGTERM), first have the controller move this broker's "
          "leaderships to other in-sync replicas and take it out of the ISRs, waiting at most "
          "broker.session.timeout.ms for it."),
    _int("broker.session.timeout.ms", 9000, "How long a broker stays registered without "
         "renewing its etcd lease (rounded up to whole seconds, as etcd's lease TTL); a broker "
         "that cannot renew for this long fences itself and registers again with a new epoch.",
         minimum=1000),
    ConfigDef("schema.registry.listeners", ConfigType.LIST, (),
              "Where the broker process also serves the schema registry (odradek's own key), as "
              "http://host:port or host:port; empty: no registry. `--registry-listen` sets it."),
])

#: Other spellings Kafka accepts: ``broker.id`` for ``node.id``, ``log.dir`` for ``log.dirs``
#: (``log.dirs`` wins when both are given).
BROKER_KEY_ALIASES: Mapping[str, str] = {"broker.id": "node.id", "log.dir": "log.dirs"}

#: Kafka broker settings accepted but not acted on (each one adds an entry to ``warnings``).
IGNORED_BROKER_KEYS: frozenset[str] = frozenset({
    "num.network.threads", "num.io.threads",
    "num.recovery.threads.per.data.dir", "background.threads", "queued.max.requests",
    "socket.send.buffer.bytes", "socket.receive.buffer.bytes",
    "socket.listen.backlog.size", "socket.connection.setup.timeout.ms",
    "socket.connection.setup.timeout.max.ms",
    "connections.max.reauth.ms",
    "max.connections.per.ip.overrides", "max.connection.creation.rate", "process.roles",
    "inter.broker.listener.name", "inter.broker.protocol.version", "security.inter.broker.protocol",
    "security.providers", "reserved.broker.max.id", "broker.id.generation.enable",
    "transaction.state.log.segment.bytes",
    "controlled.shutdown.max.retries", "controlled.shutdown.retry.backoff.ms",
    "transaction.state.log.load.buffer.size",
    "transaction.partition.verification.enable",
    "offsets.topic.segment.bytes", "offsets.topic.compression.codec", "offsets.load.buffer.size",
    "offsets.commit.timeout.ms", "offsets.commit.required.acks",
    "log.flush.offset.checkpoint.interval.ms", "log.flush.start.offset.checkpoint.interval.ms",
    "log.cleaner.io.buffer.size", "log.cleaner.io.buffer.load.factor",
    "log.dir.failure.timeout.ms", "log.message.format.version", "log.local.retention.ms",
    "log.local.retention.bytes", "log.initial.task.delay.ms",
    "authorizer.class.name", "super.users", "allow.everyone.if.no.acl.found",
    "create.topic.policy.class.name", "alter.config.policy.class.name",
    "initial.broker.registration.timeout.ms", "broker.heartbeat.interval.ms",
    "unstable.api.versions.enable", "unstable.feature.versions.enable",
    "fetch.purgatory.purge.interval.requests",
    "producer.purgatory.purge.interval.requests",
    "delete.records.purgatory.purge.interval.requests",
    "compression.gzip.level", "compression.lz4.level", "compression.zstd.level",
    "auto.include.jmx.reporter", "principal.builder.class",
    "connection.failed.authentication.delay.ms",
})

#: Families of Kafka broker settings accepted but not acted on.
IGNORED_BROKER_KEY_PREFIXES: tuple[str, ...] = (
    "zookeeper.", "controller.", "listener.name.", "ssl.", "sasl.", "metric.", "metrics.",
    "kafka.metrics.", "replica.", "remote.log.", "leader.imbalance.", "metadata.", "quota.",
    "client.quota.", "password.encoder.", "delegation.token.", "group.share.",
    "share.", "alter.log.dirs.replication.quota.", "confluent.",
)
