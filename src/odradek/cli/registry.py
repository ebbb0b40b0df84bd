"""``odradek registry``: a stand-alone schema registry against any Kafka-compatible cluster,
until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from odradek.cli._common import CliError, configure_logging

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8081",
                   help="where to serve HTTP (default 127.0.0.1:8081; port 0 picks one)")
    p.add_argument("--bootstrap-server", metavar="HOST:PORT", default="127.0.0.1:9092",
                   help="the Kafka cluster holding the _schemas topic")
    p.add_argument("--topic", default="_schemas", help="the topic the state lives in")
    p.add_argument("--group-id", metavar="GROUP",
                   help="run as one of several instances: elect a primary in this consumer "
                   "group (Confluent's default is schema-registry) and forward writes to it")
    p.add_argument("--session-timeout-ms", type=int, default=10000, metavar="MS",
                   help="how long a primary that stops heartbeating keeps the role (default "
                   "10000)")
    p.add_argument("--advertised-url", metavar="URL",
                   help="how the other instances reach this one (default: the listener)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from odradek.registry.errors import RegistryError
    from odradek.registry.server import RegistryServer, parse_listener

    configure_logging(args.log_level)
    try:
        host, port = parse_listener(args.listen)
    except ValueError as e:
        raise CliError(str(e)) from None

    async def serve() -> None:
        server = RegistryServer(
            args.bootstrap_server, host, port, topic=args.topic, group_id=args.group_id,
            advertised_url=args.advertised_url, session_timeout_ms=args.session_timeout_ms,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        print(f"schema registry listening on {server.url}", flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except RegistryError as e:
        raise CliError(e.message) from None
    except OSError as e:
        raise CliError(f"cannot start: {e}") from None
    return 0
