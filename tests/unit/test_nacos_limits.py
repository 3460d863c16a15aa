"""The reference server's limit rule model (2.1.x ``checkLimit``) and its ConnectionManager
bookkeeping, as pure units: fakes for transports, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from harness.protocol.nacos import codec
from harness.reference.nacos.connections import Connection, ConnectionManager, ConnectionMeta
from harness.reference.nacos.limits import LimitRule, check_limit
from harness.reference.nacos.pushes import ConnectionClosed, PushCenter, PushChannel, PushTimeout


def verdict(rule: LimitRule, *, ip: str = "10.0.0.1", app: str = "-", cluster: bool = False,
            sdk_count: int = 0, ip_count: int = 0):
    return check_limit(rule, client_ip=ip, app_name=app, cluster_source=cluster, sdk_count=sdk_count,
                       ip_count=ip_count)


# ---- the rule model ----------------------------------------------------------------------

def test_defaults_are_unlimited():
    v = verdict(LimitRule(), sdk_count=10_000, ip_count=10_000)
    assert v.allowed
    assert v.rule == "none"


def test_total_count_limit_counts_sdk_connections():
    rule = LimitRule(count_limit=2)
    assert verdict(rule, sdk_count=1)
    v = verdict(rule, sdk_count=2)
    assert not v.allowed
    assert v.rule == "total"


def test_cluster_source_is_exempt_from_every_limit():
    rule = LimitRule(count_limit=1, count_limit_per_client_ip={"10.0.0.1": 0}, count_limit_per_client_ip_default=1)
    v = verdict(rule, cluster=True, sdk_count=5, ip_count=5)
    assert v.allowed
    assert v.rule == "cluster-exempt"


def test_per_ip_entry_decides_before_app_and_default():
    rule = LimitRule(count_limit_per_client_ip={"10.0.0.1": 3}, count_limit_per_client_app={"shop": 1},
                     count_limit_per_client_ip_default=1)
    assert verdict(rule, app="shop", ip_count=2).rule == "per-ip"
    assert verdict(rule, app="shop", ip_count=2)
    assert not verdict(rule, app="shop", ip_count=3)


def test_per_app_limit_compares_the_ip_counter():
    rule = LimitRule(count_limit_per_client_app={"shop": 2}, count_limit_per_client_ip_default=10)
    assert verdict(rule, app="shop", ip_count=1).rule == "per-app"
    assert not verdict(rule, app="shop", ip_count=2)
    assert verdict(rule, app="other", ip_count=2).rule == "per-ip-default"


def test_per_ip_default_applies_to_unmapped_ips():
    rule = LimitRule(count_limit_per_client_ip={"10.0.0.9": 5}, count_limit_per_client_ip_default=1)
    assert verdict(rule, ip="10.0.0.1", ip_count=0)
    v = verdict(rule, ip="10.0.0.1", ip_count=1)
    assert not v.allowed
    assert v.rule == "per-ip-default"
    assert verdict(rule, ip="10.0.0.9", ip_count=4)


@pytest.mark.parametrize("value", [-1, 0])
def test_total_and_default_below_one_mean_unlimited(value):
    rule = LimitRule(count_limit=value, count_limit_per_client_ip_default=value)
    assert verdict(rule, sdk_count=50, ip_count=50)


def test_explicit_zero_for_an_ip_denies_it():
    rule = LimitRule(count_limit_per_client_ip={"10.0.0.1": 0})
    assert not verdict(rule, ip_count=0)


def test_total_is_checked_before_per_ip():
    rule = LimitRule(count_limit=1, count_limit_per_client_ip={"10.0.0.1": 10})
    assert verdict(rule, sdk_count=1, ip_count=0).rule == "total"


# ---- ConnectionManager bookkeeping -------------------------------------------------------

class FakeTransport:
    def __init__(self) -> None:
        self.open = True
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        self.open = False


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def connected(self, conn: Connection) -> None:
        self.calls.append(("connected", conn.id))

    def disconnected(self, conn: Connection) -> None:
        self.calls.append(("disconnected", conn.id))


def make_conn(cid: str, ip: str = "10.0.0.1", source: str = "sdk", app: str | None = None):
    labels = {"source": source, "module": "naming"}
    if app is not None:
        labels["AppName"] = app
    t = FakeTransport()
    meta = ConnectionMeta(connection_id=cid, client_ip=ip, remote_ip="127.0.0.1", remote_port=40000,
                          local_port=9848, labels=labels, app_name=app or "-")
    return Connection(meta, is_open=lambda: t.open, closer=t.close), t


def test_register_then_unregister_once():
    rec = Recorder()
    mgr = ConnectionManager(listeners=[rec])
    conn, t = make_conn("c1")
    assert mgr.register(conn)
    assert mgr.check_valid("c1")
    assert mgr.client_ip_counts == {"10.0.0.1": 1}
    assert mgr.unregister("c1", "test") is conn
    assert mgr.unregister("c1", "again") is None
    assert not mgr.check_valid("c1")
    assert mgr.client_ip_counts == {}  # the key goes at 0
    assert t.closes == 1
    assert rec.calls == [("connected", "c1"), ("disconnected", "c1")]
    assert [e["event"] for e in mgr.events.since(0)] == ["connected", "disconnected"]


def test_register_of_a_closed_transport_fails():
    mgr = ConnectionManager()
    conn, t = make_conn("c1")
    t.open = False
    assert not mgr.register(conn)
    assert mgr.count() == 0
    assert mgr.events.since(0) == []


def test_second_register_of_the_same_id_is_a_noop_success():
    mgr = ConnectionManager()
    conn, _ = make_conn("c1")
    assert mgr.register(conn)
    assert mgr.register(conn)
    assert mgr.client_ip_counts == {"10.0.0.1": 1}
    assert len(mgr.events.since(0)) == 1


def test_per_ip_limit_keeps_counter_equal_to_current():
    mgr = ConnectionManager(LimitRule(count_limit_per_client_ip={"10.0.0.1": 2}))
    results = [mgr.register(make_conn(f"c{i}")[0]) for i in range(3)]
    assert results == [True, True, False]
    assert mgr.client_ip_counts == {"10.0.0.1": 2}
    other, _ = make_conn("o1", ip="10.0.0.2")
    assert mgr.register(other)
    mgr.unregister("c0")
    assert mgr.register(make_conn("c3")[0])
    assert mgr.client_ip_counts == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_count_limit_exempts_cluster_but_counts_its_ip():
    mgr = ConnectionManager(LimitRule(count_limit=1))
    assert mgr.register(make_conn("s1")[0])
    assert not mgr.register(make_conn("s2")[0])
    assert mgr.register(make_conn("k1", source="cluster")[0])
    assert mgr.register(make_conn("k2", source="CLUSTER")[0])  # case-insensitive source
    assert mgr.sdk_count() == 1
    assert mgr.count() == 3
    assert mgr.client_ip_counts == {"10.0.0.1": 3}


def test_per_app_limit_through_the_manager():
    mgr = ConnectionManager(LimitRule(count_limit_per_client_app={"shop": 1}))
    assert mgr.register(make_conn("a1", app="shop")[0])
    assert not mgr.register(make_conn("a2", app="shop")[0])
    assert mgr.register(make_conn("a3", ip="10.0.0.2", app="shop")[0])


def test_monitor_ip_list_marks_traced():
    mgr = ConnectionManager(LimitRule(monitor_ip_list=frozenset({"10.0.0.7"})))
    a, _ = make_conn("a", ip="10.0.0.7")
    b, _ = make_conn("b", ip="10.0.0.8")
    assert mgr.register(a)
    assert mgr.register(b)
    assert a.traced
    assert not b.traced
    assert mgr.snapshot()["a"]["traced"] is True


def test_listener_failure_does_not_break_bookkeeping():
    class Boom:
        def connected(self, conn):
            raise RuntimeError("boom")

        def disconnected(self, conn):
            raise RuntimeError("boom")

    rec = Recorder()
    mgr = ConnectionManager(listeners=[Boom(), rec])
    conn, _ = make_conn("c1")
    assert mgr.register(conn)
    mgr.unregister("c1")
    assert rec.calls == [("connected", "c1"), ("disconnected", "c1")]
    assert mgr.client_ip_counts == {}


def test_churn_never_drifts():
    mgr = ConnectionManager(LimitRule(count_limit_per_client_ip_default=3))
    live: list[str] = []
    for i in range(200):
        ip = f"10.0.0.{i % 4}"
        conn, _ = make_conn(f"c{i}", ip=ip)
        if mgr.register(conn):
            live.append(conn.id)
        if i % 3 == 0 and live:
            mgr.unregister(live.pop(0))
        truth: dict[str, int] = {}
        for c in mgr.current.values():
            truth[c.meta.client_ip] = truth.get(c.meta.client_ip, 0) + 1
        assert mgr.client_ip_counts == truth
        assert all(n <= 3 for n in truth.values())


def test_current_shape():
    mgr = ConnectionManager()
    conn, _ = make_conn("c1", app="shop")
    conn.meta.version = "Nacos-Java-Client:v2.2.4"
    mgr.register(conn)
    entry = mgr.snapshot()["c1"]
    assert set(entry) == {"traced", "abilities", "connected", "labels", "metaInfo"}
    meta = entry["metaInfo"]
    assert meta["connectType"] == "GRPC"
    assert meta["clientIp"] == "10.0.0.1"
    assert meta["appName"] == "shop"
    assert meta["sdkSource"] is True
    assert meta["clusterSource"] is False
    assert isinstance(meta["lastActiveTime"], int)
    assert isinstance(meta["createTime"], str)
    assert {"remoteIp", "remotePort", "localPort", "version", "tenant", "labels", "tag"} <= set(meta)


def test_load_count_is_one_shot():
    mgr = ConnectionManager()
    mgr.load_count(3, "127.0.0.1:8848")
    assert mgr.take_load_count() == (3, "127.0.0.1:8848")
    assert mgr.take_load_count() == (-1, None)


# ---- pushes (asyncio, a fake stream) -----------------------------------------------------

@pytest.mark.timeout(10)
def test_push_ids_answers_and_release():
    async def scenario():
        center = PushCenter()
        sent: list = []

        async def write(payload):
            sent.append(codec.decode(payload))

        channel = PushChannel(write, "c1")
        task = asyncio.ensure_future(center.push("c1", channel, codec.CONNECT_RESET_REQUEST, {}, timeout_ms=3000))
        while not sent:
            await asyncio.sleep(0)
        push = sent[0]
        assert push.body == {"headers": {}, "requestId": "1", "module": "internal"}
        # an answer on another connection does not complete it
        assert not center.answer("c2", codec.decode(codec.push_response("ConnectResetResponse", "1")))
        go = codec.encode("ConnectResetResponse", {"resultCode": 200, "success": False, "requestId": "1"})
        assert center.answer("c1", codec.decode(go))
        answer = await task
        assert answer.result_code == 200  # judged by resultCode alone (the Go client's success:false)
        record = center.log.since(0)[0]
        assert record["answered"]
        assert record["answer_result_code"] == 200
        assert record["outcome"] == "answered"

        # a pending push is released as soon as its connection dies (TC-10)
        task2 = asyncio.ensure_future(center.push("c1", channel, codec.CLIENT_DETECTION_REQUEST, {}, timeout_ms=60_000))
        while len(sent) < 2:
            await asyncio.sleep(0)
        assert sent[1].request_id == "2"
        assert center.release("c1", "transport closed") == 1
        with pytest.raises(ConnectionClosed):
            await task2
        assert center.pending_count() == 0

        # no answer -> timeout
        with pytest.raises(PushTimeout):
            await center.push("c1", channel, codec.CLIENT_DETECTION_REQUEST, {}, timeout_ms=20)
        assert center.log.since(2)[0]["outcome"] == "timeout"

    asyncio.run(scenario())


@pytest.mark.timeout(10)
def test_push_on_a_dead_stream_fails_fast():
    async def scenario():
        async def write(payload):
            raise RuntimeError("call already finished")

        center = PushCenter()
        channel = PushChannel(write, "c1")
        with pytest.raises(ConnectionClosed):
            await center.push("c1", channel, codec.CONNECT_RESET_REQUEST, {}, timeout_ms=3000)
        assert channel.closed
        with pytest.raises(ConnectionClosed):
            await center.push("c1", None, codec.CONNECT_RESET_REQUEST, {}, timeout_ms=3000)

    asyncio.run(scenario())
