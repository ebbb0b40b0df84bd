"""The pytest plugin shipped with the package: fixtures give a live broker."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition

pytest_plugins = ["pytester"]


def test_bootstrap_fixture_is_a_live_broker(odradek_bootstrap: str) -> None:
    p = Producer({"bootstrap.servers": odradek_bootstrap})
    p.produce("plugin", key=b"k", value=b"v")
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": odradek_bootstrap, "group.id": "g",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("plugin", 0, 0)])
    m = c.poll(10)
    assert m is not None and m.error() is None
    assert (m.key(), m.value()) == (b"k", b"v")
    c.close()


def test_plugin_is_registered_for_other_projects(pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(
        """
        def test_uses_fixture(odradek_broker):
            assert odradek_broker.bootstrap.startswith("127.0.0.1:")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_cluster_fixture_is_three_live_brokers(odradek_cluster) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    addresses = odradek_cluster.bootstrap.split(",")
    assert len(addresses) == 3
    for address in addresses:
        assert AdminClient({"bootstrap.servers": address}).list_topics(timeout=10) is not None
    status = odradek_cluster.status()
    assert [f"{b.info.host}:{b.info.port}" for b in status.brokers] == addresses
    assert status.controller is not None
    assert odradek_cluster.broker(2).running and odradek_cluster.etcd.running
