"""The faults, one function each: it injects the fault, records ``fault`` events (``phase``
``start`` and ``end``) in the history, holds it, and heals it. Every fault leaves the cluster
with every process running and the network whole; the runner then waits until it settles.

Names (:data:`FAULTS`): ``kill-leader``, ``kill-controller``, ``kill-two``, ``pause-leader``,
``kill-etcd``, ``partition-brokers``, ``partition-etcd``, ``partition-etcd-member``,
``isolate-leader``, ``slow-broker`` (a latency proxy, :mod:`chaos.proxy`). ``partition-*`` and
``isolate-leader`` need :mod:`chaos.net`
(``NETWORK_FAULTS``); without it they are recorded as skipped with the reason.
"""

from __future__ import annotations

import datetime
import json
import random
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from kio.schema.produce.v9 import request as produce_req
from kio.serial import entity_reader, entity_writer

from chaos.harness import ChaosCluster, wait_for
from odradek.cluster.model import NO_LEADER
from odradek.protocol.messages import response_schema
from odradek.protocol.records import SimpleRecord, encode_batch

__all__ = ["FAULTS", "NETWORK_FAULTS", "run_fault"]

Fault = Callable[[ChaosCluster, random.Random, str], None]


def _hold(cluster: ChaosCluster) -> float:
    """Long enough for a session to expire and the controller to act on it."""
    return cluster.config.session_timeout_ms / 1000 + 1.5


def _some_leader(cluster: ChaosCluster, rng: random.Random, topic: str) -> tuple[int, int]:
    """(partition, leader) of a random partition of ``topic`` that has a leader."""
    led = [(p, s.leader) for (t, p), s in cluster.snapshot().partitions.items()
           if t == topic and s.leader != NO_LEADER]
    return rng.choice(sorted(led)) if led else (0, rng.choice(sorted(cluster.brokers)))


def _kill(cluster: ChaosCluster, nodes: list[int], fault: str, pause_s: float = 0.0) -> None:
    for i, node in enumerate(nodes):
        if i:
            time.sleep(pause_s)
        cluster.history.record("fault", fault=fault, phase="start", node=node, action="kill -9")
        cluster.brokers[node].kill()
    time.sleep(_hold(cluster))
    for node in nodes:
        cluster.brokers[node].restart(90)
        cluster.history.record("fault", fault=fault, phase="end", node=node, action="restart")


def kill_leader(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    _, leader = _some_leader(cluster, rng, topic)
    _kill(cluster, [leader], "kill-leader")


def kill_controller(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    node = cluster.snapshot().controller or rng.choice(sorted(cluster.brokers))
    _kill(cluster, [node], "kill-controller")


def kill_two(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    _kill(cluster, rng.sample(sorted(cluster.brokers), 2), "kill-two", pause_s=1.0)


def pause_leader(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    """SIGSTOP a leader past its session; once etcd has moved its partition to a new epoch,
    send that broker a produce straight to its socket (a client with stale metadata), then
    SIGCONT it. The checker flags the probe if it is acknowledged in the ended epoch."""
    partition, leader = _some_leader(cluster, rng, topic)
    before = cluster.snapshot().partitions.get((topic, partition))
    broker = cluster.brokers[leader]
    cluster.history.record("fault", fault="pause-leader", phase="start", node=leader,
                           action="SIGSTOP", partition=partition)
    broker.pause()
    probe: threading.Thread | None = None
    try:
        if before is not None:
            def moved() -> bool:
                now = cluster.snapshot().partitions.get((topic, partition))
                return now is not None and now.leader_epoch > before.leader_epoch

            try:
                wait_for(moved, "the paused leader's epoch to end",
                         cluster.config.session_timeout_ms / 1000 + 10)
                probe = threading.Thread(target=_zombie_probe,
                                         args=(cluster, broker.address, topic, partition),
                                         daemon=True)
                probe.start()
                time.sleep(0.5)  # the probe's request is in the paused broker's socket
            except TimeoutError:
                cluster.history.record("fault", fault="pause-leader", phase="note",
                                       note="epoch did not end while paused")
        time.sleep(1.0)
    finally:
        broker.resume()
        cluster.history.record("fault", fault="pause-leader", phase="end", node=leader,
                               action="SIGCONT")
    if probe is not None:
        probe.join(30)


def _zombie_probe(cluster: ChaosCluster, address: str, topic: str, partition: int) -> None:
    value = f"zombie-{time.time_ns()}"
    history = cluster.history
    invoked = history.record("send", "invoke", topic=topic, partition=partition, value=value,
                             probe=True)["t"]
    body = produce_req.ProduceRequest(
        transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10),
        topic_data=(produce_req.TopicProduceData(name=topic, partition_data=(
            produce_req.PartitionProduceData(
                index=partition, records=encode_batch([SimpleRecord(value.encode())])),
        )),),
    )
    try:
        answer = _request(address, body)
        part = answer.responses[0].partition_responses[0]
        code = int(part.error_code)
        if code == 0:
            history.record("send", "ok", topic=topic, partition=partition, value=value,
                           offset=int(part.base_offset), epoch=-1, invoked=invoked, probe=True)
        else:
            history.record("send", "fail", topic=topic, partition=partition, value=value,
                           error_code=code, probe=True)
    except (OSError, ValueError) as e:
        history.record("send", "info", topic=topic, partition=partition, value=value,
                       error=str(e), probe=True)


def _request(address: str, body: Any) -> Any:
    host, port = address.rsplit(":", 1)
    schema = type(body)
    header_cls = schema.__header_schema__
    import io

    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header_cls(
        request_api_key=schema.__api_key__, request_api_version=schema.__version__,
        correlation_id=1, client_id="chaos-zombie-probe"))
    entity_writer(schema)(buf, body)
    payload = buf.getvalue()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", _exactly(sock, 4))[0]
        frame = _exactly(sock, size)
    response = response_schema(schema.__api_key__, schema.__version__)
    _, n = entity_reader(response.__header_schema__)(frame, 0)
    return entity_reader(response)(frame, n)[0]


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _etcd_leader(cluster: ChaosCluster) -> int | None:
    """The index of the etcd member that is raft leader, if one answers."""
    for i, member in enumerate(cluster.etcd.members):
        try:
            request = urllib.request.Request(
                member.endpoint + "/v3/maintenance/status", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=2) as response:
                status = json.loads(response.read())
        except (OSError, ValueError):
            continue
        if status.get("leader") and status["leader"] == status["header"].get("member_id"):
            return i
    return None


def kill_etcd(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    """kill -9 an etcd member: the raft leader every other time (an election follows)."""
    leader = _etcd_leader(cluster)
    if leader is not None and rng.random() < 0.5:
        member = leader
    else:
        member = rng.randrange(len(cluster.etcd.members))
    cluster.history.record("fault", fault="kill-etcd", phase="start", member=member,
                           etcd_leader=member == leader)
    cluster.etcd.kill(member)
    time.sleep(_hold(cluster))
    cluster.etcd.restart(member)
    cluster.history.record("fault", fault="kill-etcd", phase="end", member=member)


def partition_brokers(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    """One broker cut off from the others (clients and etcd still reach everyone)."""
    assert cluster.net is not None
    alone = rng.choice(sorted(cluster.brokers))
    others = [n for n in cluster.brokers if n != alone]
    cluster.history.record("fault", fault="partition-brokers", phase="start",
                           groups=[[alone], others])
    cluster.net.cut(f"broker-{alone}", [p for n in others for p in cluster.ports_of(n)])
    for n in others:
        cluster.net.cut(f"broker-{n}", cluster.ports_of(alone))
    try:
        time.sleep(_hold(cluster))
    finally:
        cluster.net.heal()
        cluster.history.record("fault", fault="partition-brokers", phase="end")


def partition_etcd_member(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    """One etcd member cut off from the other two (the raft leader every other time), the
    brokers still reaching all three: the lone member can serve nothing that needs a quorum,
    and brokers talking to it must go on through the others."""
    assert cluster.net is not None
    count = len(cluster.etcd.members)
    leader = _etcd_leader(cluster)
    member = leader if leader is not None and rng.random() < 0.5 else rng.randrange(count)
    others = [i for i in range(count) if i != member]
    cluster.history.record("fault", fault="partition-etcd-member", phase="start",
                           member=member, etcd_leader=member == leader)
    cluster.net.cut(f"etcd-{member}", [cluster.etcd.members[i].peer_port for i in others])
    for i in others:
        cluster.net.cut(f"etcd-{i}", [cluster.etcd.members[member].peer_port])
    try:
        time.sleep(_hold(cluster) + 1)
    finally:
        cluster.net.heal()
        cluster.history.record("fault", fault="partition-etcd-member", phase="end",
                               member=member)


def partition_etcd(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    """A leader cut off from every etcd member: it must fence itself."""
    assert cluster.net is not None
    _, node = _some_leader(cluster, rng, topic)
    cluster.history.record("fault", fault="partition-etcd", phase="start", node=node)
    cluster.net.cut(f"broker-{node}", [m.client_port for m in cluster.etcd.members])
    try:
        time.sleep(_hold(cluster) + 1)
    finally:
        cluster.net.heal()
        cluster.history.record("fault", fault="partition-etcd", phase="end", node=node)


def isolate_leader(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    """A leader cut off from the other brokers and from etcd while clients still reach it: the
    textbook zombie. It must stop acknowledging (its followers cannot fetch, it cannot shrink
    the ISR, its session expires) while the others elect a new leader."""
    assert cluster.net is not None
    _, node = _some_leader(cluster, rng, topic)
    others = [n for n in cluster.brokers if n != node]
    cluster.history.record("fault", fault="isolate-leader", phase="start", node=node)
    cluster.net.cut(f"broker-{node}", [p for n in others for p in cluster.ports_of(n)]
                    + [m.client_port for m in cluster.etcd.members])
    for n in others:
        cluster.net.cut(f"broker-{n}", cluster.ports_of(node))
    try:
        time.sleep(_hold(cluster) + 1)
    finally:
        cluster.net.heal()
        cluster.history.record("fault", fault="isolate-leader", phase="end", node=node)


def slow_broker(cluster: ChaosCluster, rng: random.Random, topic: str) -> None:
    """Every byte to and from one broker (clients' and other brokers') held back by longer
    than the producers' request timeout: requests time out and are retried on new connections
    while the first copies still arrive, which idempotence must deduplicate."""
    if not cluster.proxies:
        cluster.history.record("fault", fault="slow-broker", phase="skipped",
                               reason="the brokers run without latency proxies")
        return
    _, node = _some_leader(cluster, rng, topic)
    delay = SLOW_BROKER_DELAY_S
    cluster.history.record("fault", fault="slow-broker", phase="start", node=node, delay_s=delay)
    cluster.proxies[node].delay_s = delay
    try:
        time.sleep(_hold(cluster))
    finally:
        cluster.proxies[node].delay_s = 0.0
        cluster.history.record("fault", fault="slow-broker", phase="end", node=node)


#: Longer than the producers' ``request.timeout.ms`` (chaos.workload).
SLOW_BROKER_DELAY_S = 6.0

FAULTS: dict[str, Fault] = {
    "kill-leader": kill_leader,
    "kill-controller": kill_controller,
    "kill-two": kill_two,
    "pause-leader": pause_leader,
    "kill-etcd": kill_etcd,
    "partition-brokers": partition_brokers,
    "partition-etcd": partition_etcd,
    "partition-etcd-member": partition_etcd_member,
    "isolate-leader": isolate_leader,
    "slow-broker": slow_broker,
}
NETWORK_FAULTS = frozenset({"partition-brokers", "partition-etcd", "partition-etcd-member",
                            "isolate-leader"})


def run_fault(name: str, cluster: ChaosCluster, rng: random.Random, topic: str) -> bool:
    """Run one fault; False (and a ``fault`` event saying why) when it cannot run here."""
    if name in NETWORK_FAULTS and cluster.net is None:
        cluster.history.record("fault", fault=name, phase="skipped",
                               reason="network partitions unavailable")
        return False
    FAULTS[name](cluster, rng, topic)
    return True
