"""The clients against a real broker process: publish/subscribe at every acks level, keys, batches,
codecs, delivery callbacks, flush, back-pressure, reconnects, start positions, seek, lag, errors.

`BrokerProcess` (also used by the other client test modules) runs `python -m nanomq broker` on an
ephemeral loopback port with a temporary data directory, and can stop, SIGKILL, SIGSTOP and
restart it on the same port.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nanomq import (
    Admin,
    BrokerError,
    BrokerUnreachableError,
    CommitFailedError,
    InvalidTopicNameError,
    Message,
    PayloadTooLargeError,
    Publisher,
    PublishTimeoutError,
    Subscriber,
    TopicNotFoundError,
)
from nanomq.record import MAX_PAYLOAD

pytestmark = pytest.mark.timeout(120)


class BrokerProcess:
    """`nanomq broker` in a subprocess on 127.0.0.1; `address` is "127.0.0.1:PORT"."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.broker.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        # NANOMQ_TEST_BROKER_CMD runs these tests against another broker command (default: this build's)
        base = os.environ.get("NANOMQ_TEST_BROKER_CMD", "").split() or [
            sys.executable,
            "-m",
            "nanomq",
            "broker",
        ]
        cmd = [*base, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(cmd + self.args, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while b"listening on" not in line:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.kill()
                raise RuntimeError(
                    f"broker did not say it listens within {timeout} s: {self.log.read_text()}"
                )
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"broker exited with {self.proc.wait()}: {self.log.read_text()}")
        self.port = int(line.decode().strip().rsplit(":", 1)[1])
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM (graceful) and wait."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._close_pipe()
        return rc

    def kill(self) -> None:
        """SIGKILL and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipe()

    def restart(self) -> BrokerProcess:
        """Stop gracefully and start again on the same port and data directory."""
        self.stop()
        return self.start()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def read_n(sub: Subscriber, n: int, timeout: float = 30.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += sub.poll_batch(n - len(out), timeout=0.5)
    return out


def create(address: str, topic: str, partitions: int = 1) -> None:
    with Admin(address) as admin:
        admin.create_topic(topic, partitions)


# ------------------------------------------------------------------ publish ----


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_every_acks_level_delivers_every_message_with_its_key(nmq: BrokerProcess, acks: int | str) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address, acks=acks) as pub:
        results = [pub.publish("t", f"v{i}".encode(), key=f"k{i % 3}".encode()) for i in range(50)]
        assert pub.flush(10) == 0
    if acks == 0:
        assert results == [None] * 50
    else:
        assert results == list(range(50))
    with Subscriber(nmq.address, "t", start="earliest") as sub:
        msgs = read_n(sub, 50)
    assert [(m.offset, m.key, m.value) for m in msgs] == [
        (i, f"k{i % 3}".encode(), f"v{i}".encode()) for i in range(50)
    ]
    assert all(m.topic == "t" and m.partition == 0 for m in msgs)


def test_a_message_without_a_key_arrives_with_key_none_and_an_empty_key_stays_empty(
    nmq: BrokerProcess,
) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address) as pub:
        pub.publish("t", b"a")
        pub.publish("t", b"b", key=b"")
        pub.publish("t", b"")
    with Subscriber(nmq.address, "t") as sub:
        msgs = read_n(sub, 3)
    assert [(m.key, m.value) for m in msgs] == [(None, b"a"), (b"", b"b"), (None, b"")]


def test_publish_batch_returns_consecutive_offsets_and_timestamps_survive(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    before = time.time_ns()
    with Publisher(nmq.address) as pub:
        assert pub.publish_batch("t", [b"a", b"b", b"c"]) == [0, 1, 2]
        assert pub.publish_batch("t", [b"d"] * 1000, timestamp_ns=123) == list(range(3, 1003))
        assert pub.publish_batch("t", []) == []
    with Subscriber(nmq.address, "t") as sub:
        msgs = read_n(sub, 1003)
    assert [m.value for m in msgs[:4]] == [b"a", b"b", b"c", b"d"]
    assert all(m.timestamp >= before for m in msgs[:3])
    assert {m.timestamp for m in msgs[3:]} == {123}


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_messages_arrive_decompressed(nmq: BrokerProcess, codec: str) -> None:
    create(nmq.address, "t")
    values = [(b"compressible %d " % i) * 200 for i in range(20)] + [os.urandom(100)]
    with Publisher(nmq.address, compression=codec) as pub:
        pub.publish_batch("t", values[:10])
        for v in values[10:]:
            pub.publish("t", v, key=b"k")
    with Subscriber(nmq.address, "t") as sub:
        msgs = read_n(sub, len(values))
    assert [m.value for m in msgs] == values


def test_on_delivery_runs_on_the_io_thread_without_polling(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    seen: list[tuple[BaseException | None, int | None, str]] = []
    done = threading.Event()

    def cb(err: BaseException | None, offset: int | None) -> None:
        seen.append((err, offset, threading.current_thread().name))
        if len(seen) == 100:
            done.set()

    with Publisher(nmq.address) as pub:
        futures = [pub.publish_async("t", b"x", on_delivery=cb) for _ in range(100)]
        assert done.wait(30)  # nobody called flush, poll or result()
        assert [f.result() for f in futures] == list(range(100))
    assert sorted(off for _, off, _ in seen) == list(range(100))
    assert all(err is None for err, _, _ in seen)
    assert {name for _, _, name in seen} != {threading.current_thread().name}


def test_reply_callbacks_get_the_reply_or_the_error_and_a_raising_one_spares_the_connection(
    nmq: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection.request_cb (the publisher's ack path): the callback gets the reply frame, the
    broker's error as its typed exception, or ConnectionLostError once the connection is closed;
    one that raises is logged and the connection goes on."""
    from nanomq import protocol as P
    from nanomq import record
    from nanomq.client._conn import Connection
    from nanomq.errors import ConnectionLostError

    create(nmq.address, "t")
    conn = Connection(nmq.address)
    got: list[tuple[object, object]] = []
    done = threading.Event()

    def keep(frame: P.Frame | None, exc: BaseException | None) -> None:
        got.append(
            (frame.opcode if frame is not None else None, getattr(exc, "code", type(exc) if exc else None))
        )
        if len(got) == 3:
            done.set()

    def boom(frame: P.Frame | None, exc: BaseException | None) -> None:
        raise RuntimeError("callback failed")

    batch = record.encode(b"v")
    try:
        with caplog.at_level("ERROR", logger="nanomq.client._conn"):
            conn.request_cb(lambda c: P.encode_publish(c, "t", 0, P.Acks.LEADER, batch), boom)
            conn.request_cb(lambda c: P.encode_publish(c, "t", 0, P.Acks.LEADER, batch), keep)
            conn.request_cb(lambda c: P.encode_publish(c, "t", 7, P.Acks.LEADER, batch), keep)  # no such
            conn.request_cb(lambda c: P.encode_ping(c), keep)
            assert done.wait(10)
        assert got == [
            (P.Opcode.PUBLISH_ACK, None),
            (None, P.ErrorCode.UNKNOWN_PARTITION),
            (P.Opcode.PONG, None),
        ]
        assert "callback failed" in caplog.text and not conn.closed.is_set()
    finally:
        conn.close()
    conn.request_cb(lambda c: P.encode_ping(c), keep)
    assert got[-1] == (None, ConnectionLostError)


def test_sync_publishes_from_many_threads_share_one_connection_and_all_get_acks(nmq: BrokerProcess) -> None:
    # Every caller waiting in publish() either reads the connection itself or is woken by the
    # thread that does: none may miss its ack or wait for the reader thread.
    create(nmq.address, "t")
    got: dict[int, list[int]] = {}
    with Publisher(nmq.address, pool_size=1) as pub:

        def worker(w: int) -> None:
            got[w] = [pub.publish("t", f"{w}:{i}".encode(), timeout=30) for i in range(150)]

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    offsets = [o for w in range(6) for o in got[w]]
    assert sorted(offsets) == list(range(900))
    assert all(got[w] == sorted(got[w]) for w in range(6))  # one connection: each thread in order
    with Subscriber(nmq.address, "t") as sub:
        msgs = read_n(sub, 900)
    assert {m.offset: m.value for m in msgs} == {
        got[w][i]: f"{w}:{i}".encode() for w in range(6) for i in range(150)
    }


def test_a_delivery_callback_may_publish_and_wait(nmq: BrokerProcess) -> None:
    # The callback runs on whichever thread reads the connection; waiting in it for another ack
    # reads on (nested) instead of waiting for itself.
    create(nmq.address, "t")
    inner: list[int | None] = []
    done = threading.Event()

    def cb(err: BaseException | None, offset: int | None) -> None:
        inner.append(pub.publish("t", b"from the callback", timeout=10))
        done.set()

    with Publisher(nmq.address) as pub:
        pub.publish_async("t", b"first", on_delivery=cb)
        assert done.wait(30)
        assert inner == [1]
        assert pub.publish("t", b"after") == 2


def test_requests_complete_while_another_thread_polls(nmq: BrokerProcess) -> None:
    # The polling thread holds the connection's read role; lag() and commit() from another
    # thread need replies on the same connection, dispatched by the poller.
    create(nmq.address, "t")
    with Publisher(nmq.address) as pub:
        pub.publish_batch("t", [b"a", b"b", b"c"])
    stop = threading.Event()
    with Subscriber(nmq.address, "t", group="g") as sub:
        assert [m.value for m in read_n(sub, 3)] == [b"a", b"b", b"c"]

        def poller() -> None:
            while not stop.is_set():
                sub.poll(timeout=0.5)

        t = threading.Thread(target=poller)
        t.start()
        try:
            for _ in range(20):
                assert sub.lag(timeout=10).messages == 0
                sub.commit(timeout=10)
        finally:
            stop.set()
            t.join(10)
        assert not t.is_alive()
    with Admin(nmq.address) as admin:
        assert [o.committed for o in admin.offsets("t", "g")] == [3]


def test_flush_counts_what_is_unacknowledged_and_in_flight_is_bounded(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address, max_in_flight=10) as pub:
        assert pub.publish("t", b"warm") == 0
        nmq.signal(signal.SIGSTOP)  # the broker stops answering: acks stop coming
        try:
            futures = [pub.publish_async("t", b"x", timeout=5) for _ in range(10)]
            assert pub.in_flight == 10
            with pytest.raises(PublishTimeoutError, match="max_in_flight=10"):
                pub.publish_async("t", b"one too many", timeout=0.2)
            assert pub.flush(0.1) == 10
            assert pub.in_flight == 10
        finally:
            nmq.signal(signal.SIGCONT)
        assert pub.flush(30) == 0
        assert [f.result() for f in futures] == list(range(1, 11))


def test_publisher_is_thread_safe_with_a_pool(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address, pool_size=3, max_in_flight=64) as pub:

        def worker(w: int) -> None:
            for i in range(200):
                pub.publish_async("t", f"{w}:{i}".encode(), key=f"w{w}".encode())

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pub.flush(30) == 0
    with Subscriber(nmq.address, "t") as sub:
        msgs = read_n(sub, 800)
    assert sorted(m.offset for m in msgs) == list(range(800))
    for w in range(4):  # one key → one connection → the order it was published in
        mine = [int(m.value.split(b":")[1]) for m in msgs if m.key == f"w{w}".encode()]
        assert mine == list(range(200))


def test_a_batch_over_max_batch_messages_and_buffers_of_other_types_arrive_whole(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    values = [b"m%03d" % i for i in range(25)]
    with Publisher(nmq.address, max_batch_messages=10) as pub:
        assert pub.publish_batch("t", values, keys=[b"k"] * 25) == list(range(25))
        assert pub.publish("t", memoryview(b"single view"), key=bytearray(b"kv")) == 25
    with Subscriber(nmq.address, "t") as sub:
        msgs = read_n(sub, 26)
    assert [m.value for m in msgs] == [*values, b"single view"]
    assert [m.key for m in msgs] == [b"k"] * 25 + [b"kv"]


def test_linger_gathers_messages_into_batches(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address, linger_ms=20) as pub:
        futures = [pub.publish_async("t", b"%d" % i) for i in range(300)]
        assert pub.flush(30) == 0
        assert [f.result() for f in futures] == list(range(300))


def test_publisher_reconnects_after_a_broker_restart(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address, acks="all", reconnect_timeout=30) as pub:
        assert pub.publish("t", b"before") == 0
        nmq.restart()
        # the first publish after the restart may find the old connection dead and reconnect
        for _ in range(3):
            try:
                offset = pub.publish("t", b"after")
                break
            except ConnectionError:
                continue
        assert offset == 1
    with Subscriber(nmq.address, "t") as sub:
        assert [m.value for m in read_n(sub, 2)] == [b"before", b"after"]


def test_subscriber_resumes_after_a_broker_restart(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address, acks="all") as pub:
        pub.publish_batch("t", [b"a", b"b"])
    with Subscriber(nmq.address, "t", reconnect_timeout=30) as sub:
        assert [m.value for m in read_n(sub, 2)] == [b"a", b"b"]
        nmq.restart()
        with Publisher(nmq.address, acks="all") as pub:
            pub.publish_batch("t", [b"c", b"d"])
        assert [(m.offset, m.value) for m in read_n(sub, 2)] == [(2, b"c"), (3, b"d")]


# ---------------------------------------------------------------- subscribe ----


def test_poll_batch_returns_an_empty_list_on_timeout_and_poll_none(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Subscriber(nmq.address, "t") as sub:
        assert sub.poll_batch(10, timeout=0.05) == []
        assert sub.poll(timeout=0.05) is None
        assert sub.poll_batch(10, timeout=0) == []


def test_start_earliest_latest_offset_and_time(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address) as pub:
        pub.publish_batch(
            "t", [b"a", b"b", b"c"], timestamp_ns=[1_000 * 10**15, 2_000 * 10**15, 3_000 * 10**15]
        )
    cases = {
        "earliest": 0,
        1: 1,
        2_000 * 10**15: 1,  # ns: the first message at or after that time
        dt.datetime.fromtimestamp(2_500_000_000, tz=dt.UTC): 2,
    }
    for start, first in cases.items():
        with Subscriber(nmq.address, "t", start=start) as sub:
            assert read_n(sub, 1)[0].offset == first, start
    with Subscriber(nmq.address, "t", start="latest") as sub:
        assert sub.poll_batch(timeout=0.1) == []
        with Publisher(nmq.address) as pub:
            pub.publish("t", b"d")
        assert [m.value for m in read_n(sub, 1)] == [b"d"]
    with pytest.raises(ValueError, match="timezone"):
        Subscriber(nmq.address, "t", start=dt.datetime(2020, 1, 1))


def test_seek_moves_the_subscription(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address) as pub:
        pub.publish_batch("t", [b"%d" % i for i in range(100)])
    with Subscriber(nmq.address, "t") as sub:
        assert [m.offset for m in read_n(sub, 10)] == list(range(10))
        sub.seek(50)
        assert [m.offset for m in read_n(sub, 5)] == list(range(50, 55))
        sub.seek("earliest")
        assert read_n(sub, 1)[0].offset == 0
        sub.seek("latest")
        assert sub.poll_batch(timeout=0.1) == []
        assert sub.position == {0: 100}


def test_lag_counts_messages_and_seconds(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    then = time.time_ns() - 5 * 10**9  # published "five seconds ago"
    with Publisher(nmq.address) as pub:
        pub.publish_batch("t", [b"x"] * 10, timestamp_ns=then)
    with Subscriber(nmq.address, "t") as sub:
        read_n(sub, 3)
        lag = sub.lag()
        assert lag.messages == 7
        assert lag.seconds >= 5
        assert lag.partitions[0].position == 3 and lag.partitions[0].end_offset == 10
        read_n(sub, 7)
        assert sub.lag().messages == 0 and sub.lag().seconds == 0


def test_subscriber_reads_every_partition(nmq: BrokerProcess) -> None:
    create(nmq.address, "multi", partitions=4)
    with Publisher(nmq.address) as pub:
        for p in range(4):
            pub.publish_batch("multi", [b"p%d" % p] * 5, partition=p)
    with Subscriber(nmq.address, "multi") as sub:
        assert sub.assignment == [0, 1, 2, 3]
        msgs = read_n(sub, 20)
    assert sorted((m.partition, m.offset) for m in msgs) == [(p, o) for p in range(4) for o in range(5)]
    assert all(m.value == b"p%d" % m.partition for m in msgs)


def test_iteration_and_context_manager(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address) as pub:
        pub.publish_batch("t", [b"a", b"b"])
    with Subscriber(nmq.address, "t") as sub:
        it = iter(sub)
        assert next(it).value == b"a"
        assert next(it).value == b"b"


# ------------------------------------------------------------------- errors ----


def test_unreachable_broker_is_named_with_the_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(
            BrokerUnreachableError, match=f"broker not reachable at 127.0.0.1:{port}: connection refused"
        ):
            Publisher(f"127.0.0.1:{port}")
        with pytest.raises(BrokerUnreachableError, match="connection refused"):
            Subscriber(f"127.0.0.1:{port}", "t")


def test_message_too_large_names_the_limit_and_bad_topic_names_say_why(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")
    with Publisher(nmq.address) as pub:
        with pytest.raises(PayloadTooLargeError, match=str(MAX_PAYLOAD)):
            pub.publish("t", b"x" * (MAX_PAYLOAD + 1))
        with pytest.raises(PayloadTooLargeError, match=str(MAX_PAYLOAD)):
            pub.publish_async("t", b"x" * (MAX_PAYLOAD + 1))
        with pytest.raises(InvalidTopicNameError, match="'/' is not allowed"):
            pub.publish("a/b", b"x")
        assert pub.publish("t", b"x" * MAX_PAYLOAD) == 0
        assert pub.in_flight == 0


def test_unknown_topic_is_reported(tmp_path: Path) -> None:
    b = BrokerProcess(tmp_path / "data").start()  # no auto-create
    try:
        with Publisher(b.address) as pub, pytest.raises(TopicNotFoundError):
            pub.publish("nope", b"x")
        with pytest.raises(TopicNotFoundError):
            Subscriber(b.address, "nope")
    finally:
        b.kill()


@pytest.mark.parametrize("group", [None, "g"])
def test_deleting_the_topic_ends_a_subscription_with_a_clear_error(tmp_path: Path, group: str | None) -> None:
    b = BrokerProcess(tmp_path / "data").start()  # no auto-create: the topic cannot come back
    try:
        create(b.address, "gone", 2)
        with Publisher(b.address) as pub:
            pub.publish_batch("gone", [b"a", b"b"], partition=0)
        with Subscriber(b.address, "gone", group=group) as sub:
            assert sorted(m.value for m in read_n(sub, 2)) == [b"a", b"b"]  # what came before: delivered
            with Admin(b.address) as admin:
                admin.delete_topic("gone")
            with pytest.raises(TopicNotFoundError, match="gone"):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    assert sub.poll(timeout=0.5) is None
            with pytest.raises(TopicNotFoundError):  # and it stays ended
                sub.poll(timeout=0)
    finally:
        b.kill()


def test_damage_found_while_delivering_ends_the_subscription_with_the_range(tmp_path: Path) -> None:
    # A bit flip in a sealed segment: recovery trusts sealed segments behind its checkpoint, so
    # the broker finds it when it reads them for a subscriber.
    data = tmp_path / "data"
    values = [b"%04d" % i * 2500 for i in range(80)]  # 10 kB each: 30 to a 300 kB segment
    b = BrokerProcess(data, "--segment-bytes", "300000").start()
    try:
        create(b.address, "t")
        with Publisher(b.address, acks="all") as pub:
            for v in values:
                pub.publish("t", v)
        b.stop()
        first = sorted((data / "topics" / "t" / "0").glob("*.log"))[0]
        raw = bytearray(first.read_bytes())
        raw[raw.index(values[12]) + 100] ^= 0x01
        first.write_bytes(raw)
        b.start()
        with Subscriber(b.address, "t") as sub:
            got = read_n(sub, 12)
            assert [m.value for m in got] == values[:12]
            with pytest.raises(BrokerError, match=r"storage failed: .*records 12\.\.12 ") as exc:
                while True:
                    assert sub.poll(timeout=10) is not None
            assert exc.value.code == 130
        b.stop()
        b = BrokerProcess(data, "--accept-loss").start()
        with Subscriber(b.address, "t") as sub:
            assert [m.value for m in read_n(sub, 79)] == values[:12] + values[13:]
    finally:
        b.kill()


# ------------------------------------------------------------------- groups ----


def test_a_member_hands_out_nothing_more_once_a_rebalance_has_reached_it(
    nmq: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group member busy with its buffer (nobody else reading its connection) still sees a
    REBALANCE that has arrived before it hands out more: its partitions may be another member's
    now, and that member may commit past what is buffered here."""
    import select

    import nanomq.client._conn as conn_module

    monkeypatch.setattr(conn_module, "GRACE", 60.0)  # the reader thread stays parked: only polls read
    create(nmq.address, "buffered", partitions=2)
    with Publisher(nmq.address) as pub:
        for p in range(2):
            pub.publish_batch("buffered", [b"m%d" % i for i in range(300)], partition=p)
    with Subscriber(nmq.address, "buffered", group="grp") as a:
        assert a.assignment == [0, 1]
        assert len(read_n(a, 10)) == 10  # the rest arrives in a's buffer
        with Subscriber(nmq.address, "buffered", group="grp") as b:
            # b's JOIN was answered after the broker pushed REBALANCE to a: it is in a's socket
            assert select.select([a._conn._sock], [], [], 10)[0]
            assert a.poll_batch(50, timeout=0) == []  # fenced; before, 50 buffered messages came
            assert b.generation > 0


def test_a_rebalance_hands_uncommitted_messages_to_the_new_owner(nmq: BrokerProcess) -> None:
    create(nmq.address, "jobs", partitions=2)
    with Publisher(nmq.address) as pub:
        for p in range(2):
            pub.publish_batch("jobs", [b"p%d-%d" % (p, i) for i in range(10)], partition=p)
    with Subscriber(nmq.address, "jobs", group="grp") as a:
        assert a.assignment == [0, 1]
        assert len(read_n(a, 20)) == 20  # A took everything and committed nothing
        with Subscriber(nmq.address, "jobs", group="grp") as b:
            deadline = time.monotonic() + 30
            while a.generation != b.generation and time.monotonic() < deadline:
                assert a.poll_batch(timeout=0.05) == []  # fenced, then nothing left to hand out
            assert sorted(a.assignment + b.assignment) == [0, 1] and len(b.assignment) == 1
            with pytest.raises(CommitFailedError, match=re.escape(f"partitions {b.assignment}")):
                a.commit()  # what A took from B's partition was never committed: B reads it again
            (mine,) = b.assignment
            assert [(m.partition, m.offset) for m in read_n(b, 10)] == [(mine, o) for o in range(10)]
            b.commit()
            a.commit()  # A's own partition commits fine
        with Admin(nmq.address) as admin:
            assert [o.committed for o in admin.offsets("jobs", "grp")] == [10, 10]
