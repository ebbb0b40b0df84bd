"""``odradek serve``: run one broker until SIGINT or SIGTERM, then shut down cleanly.

With ``--registry-listen HOST:PORT`` (or ``schema.registry.listeners`` in the config file) the
same process and event loop also serve the schema registry, bootstrapped from the broker's own
address; it is started after the broker and stopped before it. In a cluster (``etcd.endpoints``
set) the registries of all brokers join the group ``schema-registry``: one is the primary and
the others forward writes to it.

The signal handlers are installed before the broker starts, so a signal during start-up stops
it as soon as it is up. A second signal while the clean shutdown runs exits at once (exit status
1, no clean-shutdown marker: the next start recovers). SIGUSR1 prints the broker's request
timings (:mod:`odradek.broker.timings`) as one JSON line on stdout and starts them afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal

from odradek.cli._common import CliError, configure_logging

__all__ = ["REGISTRY_GROUP", "configure", "run"]

#: The group the registries of a cluster's brokers elect their primary in (Confluent's
#: ``schema.registry.group.id`` default).
REGISTRY_GROUP = "schema-registry"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", metavar="HOST:PORT", help="address to bind (port 0 picks one)")
    p.add_argument("--data-dir", metavar="DIR", help="where the logs live (log.dirs)")
    p.add_argument("--config", metavar="FILE", help="a server.properties file with Kafka's names")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument(
        "--registry-listen", metavar="HOST:PORT",
        help="also serve the schema registry here (schema.registry.listeners)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from odradek.config import BrokerConfig, ConfigError, load_properties

    configure_logging(args.log_level)
    try:
        config = load_properties(args.config) if args.config else BrokerConfig.from_properties({})
        config = config.with_overrides(listen=args.listen, data_dir=args.data_dir)
    except ConfigError as e:
        raise CliError(f"invalid configuration: {e}") from None
    except OSError as e:
        raise CliError(f"cannot read {args.config}: {e.strerror}") from None
    registry = args.registry_listen
    if registry is None and config.schema_registry_listeners:
        registry = config.schema_registry_listeners[0]
    registry_address: tuple[str, int] | None = None
    if registry:
        from odradek.registry.server import parse_listener

        try:
            registry_address = parse_listener(registry)
        except ValueError as e:
            raise CliError(f"invalid registry listener: {e}") from None
    from odradek.broker.cluster_member import ClusterIdMismatch, ClusterUnavailable
    from odradek.cluster.membership import DuplicateBrokerRegistration

    try:
        asyncio.run(_serve(config, registry_address))
    except OSError as e:
        raise CliError(f"cannot start: {e}") from None
    except (ClusterIdMismatch, ClusterUnavailable, DuplicateBrokerRegistration) as e:
        raise CliError(f"cannot start: {e}") from None
    return 0


#: gc thresholds for the serving process: CPython's (700, 10, 10) but full collections ten times
#: rarer.
GC_THRESHOLDS = (700, 10, 100)


def _tune_garbage_collector() -> None:
    """What start-up made (modules, schemas, the image, the logs) lives as long as the process:
    it is moved out of the cyclic collector's way (``gc.freeze``), and collections run less
    often. With CPython's defaults a broker under 1,000 acks=all records/s ran a full
    collection every few seconds, 30-60 ms each on two loaded cores (about 50,000 tracked
    objects): a stall of every request on the broker, the replication latency's p99. Only the
    ``serve`` process does this (brokers run inside tests too, where freezing would keep every
    test's objects)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(config: object, registry_address: tuple[str, int] | None) -> None:
    from odradek.broker.app import Broker

    broker = Broker(config)  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logging.getLogger("odradek.broker").warning(
                "%s again: exiting without finishing the clean shutdown", sig.name
            )
            os._exit(1)
        logging.getLogger("odradek.broker").info("%s: shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    def dump_timings() -> None:
        # One JSON line of the request-latency histograms since the last dump (the bench
        # reads it after each workload); see odradek.broker.timings.
        print(json.dumps(broker.timings.snapshot(reset=True)), flush=True)

    loop.add_signal_handler(signal.SIGUSR1, dump_timings)
    await broker.start()
    _tune_garbage_collector()
    print(f"odradek listening on {broker.host}:{broker.port}", flush=True)
    registry = None
    try:
        if registry_address is not None:
            from odradek.registry.server import RegistryServer

            # In a cluster every broker may serve a registry: they elect one primary through
            # Confluent's default group and forward writes to it. A broker on its own is the
            # only instance (no group, so its first write does not wait for a rebalance).
            clustered = bool(getattr(config, "etcd_endpoints", ()))
            registry = RegistryServer(
                broker.bootstrap, *registry_address,
                group_id=REGISTRY_GROUP if clustered else None,
            )
            await registry.start()
            print(f"schema registry listening on {registry.url}", flush=True)
        await stop.wait()
    finally:
        if registry is not None:
            await registry.stop()
        await broker.stop()
