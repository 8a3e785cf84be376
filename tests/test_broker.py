"""The broker end to end: a real `nanomq broker` process, real sockets, real files.

The handshake (versions, auth tokens, TLS), publish at every acks level with keys, batches and
compression, fetch and long-poll, push subscriptions with credit, hostile topic names,
consumer groups and committed offsets across restarts, metrics, limits, graceful shutdown.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_util import BrokerErrorReply, BrokerProcess, RawClient

from nanomq import protocol as P
from nanomq import record

E = P.ErrorCode


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the tests that do not restart it (auto-create on, 2 default partitions)."""
    root = tmp_path_factory.mktemp("shared")
    proc = BrokerProcess(
        root / "data", "--auto-create-topics", "--default-partitions", "2", "--metrics-port", "0"
    )
    yield proc
    assert proc.stop() is not None
    assert proc.proc is not None and proc.proc.returncode == 0


@pytest.fixture
def client(shared: BrokerProcess) -> Iterator[RawClient]:
    with RawClient(shared.address) as c:
        yield c


def fatal_error(frames: list[P.Frame]) -> P.ErrorReply:
    assert frames and frames[-1].opcode == P.Opcode.ERROR, frames
    return P.parse_error(frames[-1])


# ------------------------------------------------------------- handshake ----


def test_welcome_announces_the_limits(client: RawClient) -> None:
    w = client.welcome
    assert w is not None
    assert (w.max_frame, w.max_payload, w.max_batch) == (1 << 20, 65536, 16384)


def test_request_before_hello_is_refused_and_the_connection_closed(shared: BrokerProcess) -> None:
    with RawClient(shared.address, hello=False) as c:
        c.send(P.encode_list_topics(5))
        err = fatal_error(c.expect_closed())
    assert err.code == E.HANDSHAKE_REQUIRED


def test_wrong_protocol_version_is_refused(shared: BrokerProcess) -> None:
    with RawClient(shared.address, hello=False) as c:
        hello = bytearray(P.encode_hello(1, "old"))
        hello[2] = 9
        c.send(bytes(hello))
        err = fatal_error(c.expect_closed())
    assert err.code == E.UNSUPPORTED_VERSION and "9" in err.message


def test_second_hello_is_refused(client: RawClient) -> None:
    client.send(P.encode_hello(9, "again"))
    assert fatal_error(client.expect_closed()).code == E.HANDSHAKE_REQUIRED


def test_an_invalid_frame_closes_only_its_own_connection(shared: BrokerProcess, client: RawClient) -> None:
    with RawClient(shared.address) as bad:
        bad.send(b"GET / HTTP/1.1\r\n\r\n")
        assert fatal_error(bad.expect_closed()).code == E.INVALID_FRAME
    client.ping()


def test_broker_only_opcodes_from_a_client_are_invalid(client: RawClient) -> None:
    client.send(P.encode_publish_ack(3, 0, 1, 1))
    assert fatal_error(client.expect_closed()).code == E.INVALID_FRAME


def test_handshake_timeout_closes_a_silent_connection(tmp_path: Path) -> None:
    with (
        BrokerProcess(tmp_path / "d", "--handshake-timeout", "0.3") as b,
        RawClient(b.address, hello=False) as c,
    ):
        assert fatal_error(c.expect_closed()).code == E.TIMEOUT


def test_connection_limit(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d", "--max-connections", "2") as b:
        with RawClient(b.address) as c1, RawClient(b.address) as c2:
            with RawClient(b.address, hello=False) as c3:
                err = fatal_error(c3.expect_closed())
            assert err.code == E.TOO_MANY_CONNECTIONS and "limit is 2" in err.message
            c1.ping()
            c2.ping()
        # the slots are free again once those two have gone (the broker notices the close)
        for _ in range(50):
            try:
                with RawClient(b.address) as c4:
                    c4.ping()
                break
            except (ConnectionError, BrokerErrorReply, OSError):
                continue
        else:
            pytest.fail("connection slots never freed")


# ------------------------------------------------------------------ auth ----


@pytest.fixture
def authed(tmp_path: Path) -> Iterator[BrokerProcess]:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with BrokerProcess(tmp_path / "data", "--auth-token-file", str(token_file), "--auto-create-topics") as b:
        yield b


@pytest.mark.parametrize("token", [None, b"wrong", b"s3cret-token-but-longer", b""])
def test_missing_or_wrong_token_is_refused_before_any_state_changes(
    authed: BrokerProcess, token: bytes | None
) -> None:
    with RawClient(authed.address, hello=False) as c:
        # HELLO pipelined with a PUBLISH that would auto-create a topic if it were ever handled
        c.send(
            P.encode_hello(1, "intruder", token) + P.encode_publish(2, "stolen", 0, 1, record.encode(b"x"))
        )
        frames = c.expect_closed()
    err = fatal_error(frames)
    assert err.code == E.NOT_AUTHORIZED
    assert len(frames) == 1
    assert not (authed.data_dir / "topics" / "stolen").exists()
    with RawClient(authed.address, token=b"s3cret-token") as ok:
        assert P.parse_info(ok.request(P.encode_list_topics))["topics"] == []


def test_right_token_is_accepted(authed: BrokerProcess) -> None:
    with RawClient(authed.address, token=b"s3cret-token") as c:
        ack = c.publish("t", [b"hello"], partition=0)
        assert ack is not None and ack.base_offset == 0


# ------------------------------------------------------------------- TLS ----


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


def test_tls_publish_and_fetch(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    crt, key = cert
    ctx = ssl.create_default_context(cafile=str(crt))
    with BrokerProcess(
        tmp_path / "d", "--tls-cert", str(crt), "--tls-key", str(key), "--auto-create-topics"
    ) as b:
        with RawClient(b.address, tls=ctx) as c:
            assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
            c.publish("secure", [b"a" * 1000, b"b"], acks=P.Acks.ALL)
            assert [r.value for r in c.fetch_all("secure", 0)] == [b"a" * 1000, b"b"]
            big = [bytes([i]) * 60_000 for i in range(10)]  # runs past the sendfile threshold
            c.publish("secure", big)
            assert [r.value for r in c.fetch_all("secure", 0, 2)] == big
        # a plain-text client gets nothing it can use
        with pytest.raises((ConnectionError, OSError, P.ProtocolError)):
            RawClient(b.address, timeout=5)


# --------------------------------------------------------------- publish ----


@pytest.mark.parametrize("acks", [P.Acks.NONE, P.Acks.LEADER, P.Acks.ALL])
def test_publish_and_fetch_at_every_acks_level(client: RawClient, acks: P.Acks) -> None:
    topic = f"acks-{int(acks)}"
    client.create_topic(topic, 1)
    values = [f"m{i}".encode() for i in range(100)]
    for i in range(0, 100, 10):
        ack = client.publish(topic, values[i : i + 10], acks=acks)
        if acks == P.Acks.NONE:
            assert ack is None
        else:
            assert ack == P.PublishAck(0, 10, i)
    client.ping()  # everything sent before the PING was handled before it
    got = client.fetch_all(topic, 0)
    assert [r.value for r in got] == values
    assert [r.offset for r in got] == list(range(100))


def test_keys_pick_a_stable_partition(client: RawClient) -> None:
    client.create_topic("keyed", 4)
    seen: dict[bytes, set[int]] = {}
    for i in range(40):
        key = f"user-{i % 5}".encode()
        ack = client.publish("keyed", [b"v"], keys=[key], key=key, partition=-1)
        assert ack is not None
        seen.setdefault(key, set()).add(ack.partition)
    assert all(len(parts) == 1 for parts in seen.values())
    records = [r for p in range(4) for r in client.fetch_all("keyed", p)]
    assert sorted(r.key for r in records) == sorted(f"user-{i % 5}".encode() for i in range(40))


def test_unkeyed_publishes_round_robin(client: RawClient) -> None:
    client.create_topic("rr", 3)
    parts = []
    for _ in range(6):
        ack = client.publish("rr", [b"x"], partition=-1)
        assert ack is not None
        parts.append(ack.partition)
    assert sorted(parts) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("codec", [record.Codec.NONE, record.Codec.ZSTD, record.Codec.LZ4])
def test_compressed_batches_pass_through_unchanged(client: RawClient, codec: record.Codec) -> None:
    topic = f"codec-{codec.name.lower()}"
    client.create_topic(topic, 1)
    values = [bytes([i]) * 3000 for i in range(20)]
    batch = record.encode_batch(values, codec=codec)
    P.parse_publish_ack(client.request(lambda c: P.encode_publish(c, topic, 0, 1, batch)))
    r = client.fetch(topic, 0, 0)
    stored = bytearray(batch)
    record.stamp_offsets(stored, 0)
    assert bytes(r.records) == bytes(stored)  # the producer's bytes, offsets stamped, nothing else
    got = record.decode_batch(bytes(r.records))
    assert [x.value for x in got] == values and {x.codec for x in got} == {codec}


def test_corrupt_batch_is_refused_and_nothing_is_appended(client: RawClient) -> None:
    client.create_topic("corrupt", 1)
    batch = bytearray(record.encode_batch([b"good", b"bad"]))
    batch[-8] ^= 0xFF  # inside the second record's value: CRC mismatch
    with pytest.raises(BrokerErrorReply) as e:
        client.request(lambda c: P.encode_publish(c, "corrupt", 0, 1, bytes(batch)))
    assert e.value.code == E.CORRUPT_BATCH and "crc" in e.value.message.lower()
    assert client.offsets("corrupt")[0].end_offset == 0
    client.ping()  # the connection is still usable


def test_truncated_batch_and_empty_batch_are_refused(client: RawClient) -> None:
    client.create_topic("trunc", 1)
    batch = record.encode_batch([b"x" * 100])
    with pytest.raises(BrokerErrorReply) as e:
        client.request(lambda c: P.encode_publish(c, "trunc", 0, 1, batch[:-8]))
    assert e.value.code == E.CORRUPT_BATCH
    with pytest.raises(BrokerErrorReply) as e:
        client.request(lambda c: P.encode_publish(c, "trunc", 0, 1, b""))
    assert e.value.code == E.INVALID_REQUEST


def test_oversized_message_is_refused_naming_the_limit(client: RawClient) -> None:
    client.create_topic("big", 1)
    rec = bytearray(record.encode(b"x" * 16))
    struct.pack_into("<I", rec, 28, 70000)  # raw_len beyond 64 KiB
    with pytest.raises(BrokerErrorReply) as e:
        client.request(lambda c: P.encode_publish(c, "big", 0, 1, bytes(rec)))
    assert e.value.code == E.MESSAGE_TOO_LARGE and "65536" in e.value.message


def test_oversized_frame_is_refused_before_it_is_read(shared: BrokerProcess) -> None:
    with RawClient(shared.address) as c:
        c.send(P.encode_header(P.Opcode.PUBLISH, 7, 2**32 - 1))
        err = fatal_error(c.expect_closed())
    assert err.code == E.FRAME_TOO_LARGE and "1048576" in err.message


def test_too_many_records_in_one_batch(tmp_path: Path) -> None:
    with (
        BrokerProcess(tmp_path / "d", "--max-batch", "10", "--auto-create-topics") as b,
        RawClient(b.address) as c,
    ):
        assert c.publish("t", [b"x"] * 10) is not None
        with pytest.raises(BrokerErrorReply) as e:
            c.publish("t", [b"x"] * 11)
        assert e.value.code == E.BATCH_TOO_LARGE and "limit of 10" in e.value.message


def test_unknown_topic_and_partition(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d") as b, RawClient(b.address) as c:
        with pytest.raises(BrokerErrorReply) as e:
            c.publish("nope", [b"x"])
        assert e.value.code == E.UNKNOWN_TOPIC
        c.create_topic("one", 1)
        with pytest.raises(BrokerErrorReply) as e:
            c.publish("one", [b"x"], partition=1)
        assert e.value.code == E.UNKNOWN_PARTITION
        with pytest.raises(BrokerErrorReply) as e:
            c.create_topic("one", 1)
        assert e.value.code == E.TOPIC_EXISTS
        with pytest.raises(BrokerErrorReply) as e:
            c.create_topic("many", 5000)
        assert e.value.code == E.INVALID_REQUEST


# --------------------------------------------------------- hostile names ----

HOSTILE_NAMES = [
    "", ".", "..", "/", "a/b", "a/../b", "../x", "../../etc/passwd", "/etc/passwd", "/tmp", "..\\x", "a\\b",
    "a\0b", "\0", "x" * 250, "x" * 1000, "y" * 65535, " ", "a b", "a\tb", "a\nb", "a\rb", "~", "~root",
    "$HOME", "${IFS}", "a;b", "a|b", "a&b", "a>b", "a<b", "a*", "?", "a?b", "[a]", "{a}", "a:b",
    "a,b", "a'b", 'a"b', "`id`", "a=b", "a+b", "a@b", "a#b", "a%b", "%2e%2e", "%2F",
    "é", "日本", "a\u200bb", "\u202e", "a\x7fb",
    "\x01", "a\x1bb", "ﬁ", "．．", "a／b", "ａ", "..\0", ".\0", "topic\0.txt", "con/", "a/", "/a",
    "./a", "a/.", "//", "a//b", "\\\\server\\share",
]  # fmt: skip


def test_there_are_at_least_sixty_hostile_names() -> None:
    assert len(set(HOSTILE_NAMES)) >= 60


def test_hostile_topic_names_are_rejected_and_nothing_is_created_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    data = outside / "inner" / "data"
    with BrokerProcess(data, "--auto-create-topics") as b, RawClient(b.address) as c:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        for name in HOSTILE_NAMES:
            requests = [
                lambda k, n=name: P.encode_create_topic(k, n, 1),
                lambda k, n=name: P.encode_publish(k, n, -1, 1, record.encode(b"x")),
                lambda k, n=name: P.encode_fetch(k, n, 0, 0),
                lambda k, n=name: P.encode_subscribe(k, n, 0, -2, 1000),
                lambda k, n=name: P.encode_describe_topic(k, n),
                lambda k, n=name: P.encode_delete_topic(k, n),
                lambda k, n=name: P.encode_offsets(k, n),
                lambda k, n=name: P.encode_join(k, n, "ok-topic"),
                lambda k, n=name: P.encode_join(k, "ok-group", n),
                lambda k, n=name: P.encode_commit(k, n, "ok-topic", {0: 0}),
                lambda k, n=name: P.encode_describe_group(k, n),
            ]
            for build in requests:
                with pytest.raises(BrokerErrorReply) as e:
                    c.request(build)
                assert e.value.code == E.INVALID_TOPIC, (name, e.value)
                assert "invalid" in e.value.message
        c.ping()
        after = sorted(str(p) for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    assert all(p.startswith(str(data)) for p in new), new
    assert not any(p.startswith(str(data / "topics") + "/") for p in new), new


def test_topic_name_that_is_not_utf8_is_an_invalid_frame(client: RawClient) -> None:
    body = b"\x03\x00\xff/.." + struct.pack("<iBBH", 0, 1, 0, 0) + record.encode(b"x")
    client.send(P.encode_frame(P.Opcode.PUBLISH, 3, body))
    assert fatal_error(client.expect_closed()).code == E.INVALID_FRAME


# ----------------------------------------------------------------- fetch ----


def test_fetch_long_poll_returns_when_records_arrive(shared: BrokerProcess, client: RawClient) -> None:
    client.create_topic("poll", 1)
    corr = client.next_corr()
    client.send(P.encode_fetch(corr, "poll", 0, 0, 1 << 20, 60_000))
    with RawClient(shared.address) as producer:
        producer.publish("poll", [b"late"])
    r = P.parse_records(client.reply(corr))
    assert [x.value for x in record.decode_batch(bytes(r.records))] == [b"late"]
    assert (r.first_offset, r.next_offset, r.end_offset) == (0, 1, 1)


def test_a_flood_of_long_polls_is_held_then_answered_in_full(shared: BrokerProcess) -> None:
    with RawClient(shared.address) as c, RawClient(shared.address) as producer:
        c.create_topic("flood", 1)
        c.send(b"".join(P.encode_fetch(i + 1, "flood", 0, 0, 1024, 300_000) for i in range(3000)))
        c.send(P.encode_ping(99_999))
        # the broker holds about 1024 polls (plus the rest of what it had read) and stops reading;
        # one record answers them all, then it reads on
        producer.publish("flood", [b"wake"])
        replies, pong = 0, False
        while replies < 3000 or not pong:
            f = c.recv_frame(timeout=60)
            if f.opcode == P.Opcode.PONG:
                pong = True
            else:
                assert P.parse_records(f).next_offset == 1
                replies += 1
        assert replies == 3000


def test_fetch_at_the_end_without_wait_is_empty_and_past_it_is_out_of_range(client: RawClient) -> None:
    client.create_topic("ends", 1)
    client.publish("ends", [b"a", b"b"])
    r = client.fetch("ends", 0, 2)
    assert (r.first_offset, r.next_offset, len(r.records)) == (2, 2, 0)
    with pytest.raises(BrokerErrorReply) as e:
        client.fetch("ends", 0, 3)
    assert e.value.code == E.OFFSET_OUT_OF_RANGE and "0..2" in e.value.message


def test_large_fetches_and_deliveries_arrive_intact(client: RawClient) -> None:
    client.create_topic("large", 1)
    values = [bytes([i]) * 50_000 for i in range(40)]  # 2 MB: sendfile on plain TCP
    for i in range(0, 40, 10):
        client.publish("large", values[i : i + 10])
    assert [r.value for r in client.fetch_all("large", 0)] == values
    sub = P.parse_subscribed(
        client.request(lambda c: P.encode_subscribe(c, "large", 0, -2, 1 << 30, 1 << 20))
    )
    got: list[bytes] = []
    while len(got) < 40:
        f = client.pushed.pop(0) if client.pushed else client.recv_frame()
        r = P.parse_records(f)
        assert r.subscription == sub.subscription
        got.extend(x.value for x in record.decode_batch(bytes(r.records)))
    assert got == values


def test_fetch_max_bytes_returns_at_least_one_whole_record(client: RawClient) -> None:
    client.create_topic("sized", 1)
    client.publish("sized", [b"x" * 500] * 10)
    r = client.fetch("sized", 0, 0, max_bytes=1)
    assert r.next_offset - r.first_offset == 1
    r = client.fetch("sized", 0, 0, max_bytes=2000)
    assert 1 <= r.next_offset - r.first_offset <= 3 and len(r.records) <= 2000


def test_offset_for_timestamp(client: RawClient) -> None:
    client.create_topic("timed", 1)
    batch = record.encode_batch([b"a", b"b", b"c"], timestamp_ns=[1_000, 2_000, 3_000])
    client.request(lambda c: P.encode_publish(c, "timed", 0, 1, batch))
    assert P.parse_time_offset_result(
        client.request(lambda c: P.encode_time_offset(c, "timed", 0, 1_500))
    ) == (0, 1)
    assert P.parse_time_offset_result(
        client.request(lambda c: P.encode_time_offset(c, "timed", 0, 9_000))
    ) == (0, 3)


# ------------------------------------------------------------- subscribe ----


def drain_delivers(c: RawClient, sub: int) -> list[P.Records]:
    """DELIVER frames for `sub` that arrived before a PING round trip."""
    c.ping()
    out = [P.parse_records(f) for f in c.pushed if f.opcode == P.Opcode.DELIVER]
    c.pushed.clear()
    assert all(r.subscription == sub for r in out)
    return out


def test_push_subscription_respects_credit(client: RawClient) -> None:
    client.create_topic("push", 1)
    for _ in range(10):
        client.publish("push", [b"p" * 100] * 10)  # 100 records of 168 bytes
    sub = P.parse_subscribed(
        client.request(lambda c: P.encode_subscribe(c, "push", 0, P.Start.EARLIEST, 1000))
    )
    assert (sub.offset, sub.end_offset) == (0, 100)
    got = drain_delivers(client, sub.subscription)
    sent = sum(len(r.records) for r in got)
    assert 0 < sent <= 1000 + 168
    for _ in range(3):  # no credit, no more frames, however long we look
        assert drain_delivers(client, sub.subscription) == []
    client.send(P.encode_credit(client.next_corr(), sub.subscription, 1 << 20))
    # The pump pushes on the loop's next turn, so a PONG may overtake the DELIVERs:
    # round trips until the rest has come (or a bounded number of them).
    for _ in range(200):
        got += drain_delivers(client, sub.subscription)
        if sum(len(r.records) for r in got) >= 100 * 168:
            break
    offsets = [x.offset for r in got for x in record.decode_batch(bytes(r.records))]
    assert offsets == list(range(100))
    # new records are pushed as they arrive
    client.publish("push", [b"new"])
    more = [f for f in [client.recv_frame()] if f.opcode == P.Opcode.DELIVER] or drain_delivers(client, 0)
    assert more


def test_a_waiting_subscriber_gets_exactly_the_bytes_the_log_holds(shared: BrokerProcess) -> None:
    """Caught-up subscribers are served from the batch that woke them (not a read of the log):
    what they get must be the log's bytes, offsets stamped, whatever offsets the publisher sent."""
    with RawClient(shared.address) as pub, RawClient(shared.address) as s1, RawClient(shared.address) as s2:
        pub.create_topic("woken", 1)
        pub.publish("woken", [b"before"])
        subs = [
            (
                c,
                P.parse_subscribed(
                    c.request(lambda k: P.encode_subscribe(k, "woken", 0, P.Start.LATEST, 1 << 20))
                ),
            )
            for c in (s1, s2)
        ]
        sent = []
        for i, values in enumerate(
            [[b"a"], [b"bb", b"c" * 300], [b"k%d" % j for j in range(50)], [b"z" * 40_000, b"y" * 40_000]]
        ):
            batch = record.encode_batch(values, first_offset=10_000 * (i + 1))  # offsets the log must replace
            ack = P.parse_publish_ack(
                pub.request(lambda c, batch=batch: P.encode_publish(c, "woken", 0, P.Acks.LEADER, batch))
            )
            sent.append((ack.base_offset, ack.base_offset + len(values)))
        end = sent[-1][1]
        for c, sub in subs:
            got: list[P.Records] = []
            for _ in range(200):
                got += drain_delivers(c, sub.subscription)
                if got and got[-1].next_offset == end:
                    break
            delivered = b"".join(bytes(r.records) for r in got)
            assert got[0].first_offset == 1 and got[-1].next_offset == end
            from_log = b"".join(bytes(r.raw) for r in pub.fetch_all("woken", 0, 1))
            assert delivered == from_log  # byte for byte, offsets stamped by the log
            assert [r.offset for r in record.decode_batch(delivered)] == list(range(1, end))


def test_subscribe_latest_and_unsubscribe(client: RawClient) -> None:
    client.create_topic("latest", 1)
    client.publish("latest", [b"old"])
    sub = P.parse_subscribed(
        client.request(lambda c: P.encode_subscribe(c, "latest", 0, P.Start.LATEST, 1 << 20))
    )
    assert sub.offset == 1
    client.publish("latest", [b"new"])
    f = client.pushed.pop() if client.pushed else client.recv_frame()
    r = P.parse_records(f)
    assert [x.value for x in record.decode_batch(bytes(r.records))] == [b"new"]
    P.parse_empty(client.request(lambda c: P.encode_unsubscribe(c, sub.subscription)), P.Opcode.OK)
    with pytest.raises(BrokerErrorReply) as e:
        client.request(lambda c: P.encode_unsubscribe(c, sub.subscription))
    assert e.value.code == E.UNKNOWN_SUBSCRIPTION


# ---------------------------------------------------------------- groups ----


def join(c: RawClient, group: str, topic: str, member: str = "", strategy: int = 0) -> P.Assignment:
    return P.parse_assignment(c.request(lambda k: P.encode_join(k, group, topic, member, 10_000, strategy)))


def test_group_members_split_the_partitions_and_rebalance(shared: BrokerProcess) -> None:
    with RawClient(shared.address) as a, RawClient(shared.address) as b:
        a.create_topic("grouped", 6)
        a1 = join(a, "g1", "grouped")
        assert a1.partitions == (0, 1, 2, 3, 4, 5) and a1.generation == 1
        b1 = join(b, "g1", "grouped")
        assert b1.generation == 2
        # a hears of the new generation by a pushed REBALANCE, then re-joins with its id
        f = a.recv_frame()
        assert P.parse_rebalance(f) == P.Rebalance("g1", 2)
        a2 = join(a, "g1", "grouped", a1.member_id)
        assert a2.generation == 2
        assert sorted(a2.partitions + b1.partitions) == list(range(6))
        assert len(a2.partitions) == len(b1.partitions) == 3
        hb = P.parse_heartbeat_ok(a.request(lambda k: P.encode_heartbeat(k, "g1", a1.member_id, 2)))
        assert hb == 2
        # the stale generation cannot commit; a partition owned by the other member cannot either
        with pytest.raises(BrokerErrorReply) as e:
            a.request(lambda k: P.encode_commit(k, "g1", "grouped", {a2.partitions[0]: 0}, a1.member_id, 1))
        assert e.value.code == E.ILLEGAL_GENERATION
        with pytest.raises(BrokerErrorReply) as e:
            a.request(lambda k: P.encode_commit(k, "g1", "grouped", {b1.partitions[0]: 0}, a1.member_id, 2))
        assert e.value.code == E.NOT_ASSIGNED
        a.publish("grouped", [b"x"] * 5, partition=a2.partitions[0])
        a.request(lambda k: P.encode_commit(k, "g1", "grouped", {a2.partitions[0]: 3}, a1.member_id, 2))
        offs = {o.partition: o for o in a.offsets("grouped", "g1")}
        assert offs[a2.partitions[0]].committed == 3 and offs[a2.partitions[0]].lag == 2
        desc = P.parse_info(a.request(lambda k: P.encode_describe_group(k, "g1")))
        assert desc["generation"] == 2 and len(desc["members"]) == 2
        # b's connection closes: a gets everything back
    with RawClient(shared.address) as c:
        desc = P.parse_info(c.request(lambda k: P.encode_describe_group(k, "g1")))
        assert desc["members"] == [] and desc["offsets"][0]["committed"] >= -1


def test_round_robin_strategy(shared: BrokerProcess) -> None:
    with RawClient(shared.address) as a, RawClient(shared.address) as b:
        a.create_topic("rr-group", 5)
        m1 = join(a, "g-rr", "rr-group", strategy=P.Strategy.ROUND_ROBIN)
        m2 = join(b, "g-rr", "rr-group", strategy=P.Strategy.ROUND_ROBIN)
        a.recv_frame()
        m1 = join(a, "g-rr", "rr-group", m1.member_id, strategy=P.Strategy.ROUND_ROBIN)
        first, second = sorted([m1, m2], key=lambda m: m.member_id)
        assert first.partitions == (0, 2, 4) and second.partitions == (1, 3)


def test_unknown_member_and_group(client: RawClient) -> None:
    with pytest.raises(BrokerErrorReply) as e:
        client.request(lambda k: P.encode_heartbeat(k, "no-such-group", "m", 1))
    assert e.value.code == E.UNKNOWN_GROUP
    client.create_topic("um", 1)
    join(client, "g-um", "um")
    with pytest.raises(BrokerErrorReply) as e:
        join(client, "g-um", "um", "ghost-member")
    assert e.value.code == E.UNKNOWN_MEMBER


def test_session_expiry_rebalances(shared: BrokerProcess) -> None:
    with RawClient(shared.address) as a, RawClient(shared.address) as b:
        a.create_topic("expiry", 2)
        ma = P.parse_assignment(a.request(lambda k: P.encode_join(k, "g-exp", "expiry", "", 1000)))
        mb = P.parse_assignment(b.request(lambda k: P.encode_join(k, "g-exp", "expiry", "", 60_000)))
        assert mb.generation == ma.generation + 1
        # a never heartbeats: after its 1 s session b is told of a new generation
        f = b.recv_frame(timeout=30)
        assert P.parse_rebalance(f).generation == mb.generation + 1
        mb2 = join(b, "g-exp", "expiry", mb.member_id)
        assert mb2.partitions == (0, 1)


def test_committed_offsets_survive_restart_and_sigkill(tmp_path: Path) -> None:
    b = BrokerProcess(tmp_path / "d", "--auto-create-topics", "--default-partitions", "3")
    try:
        with RawClient(b.address) as c:
            for p in range(3):
                c.publish("orders", [b"x"] * 10, partition=p)
            c.request(lambda k: P.encode_commit(k, "billing", "orders", {0: 4, 1: 10}))
        b.restart()  # graceful
        with RawClient(b.address) as c:
            offs = c.offsets("orders", "billing")
            assert [(o.committed, o.end_offset) for o in offs] == [(4, 10), (10, 10), (-1, 10)]
            c.request(lambda k: P.encode_commit(k, "billing", "orders", {2: 7}))
        b.kill()  # the OK of a COMMIT means the offsets are on disk
        b.start()
        with RawClient(b.address) as c:
            assert [o.committed for o in c.offsets("orders", "billing")] == [4, 10, 7]
            sub = P.parse_subscribed(
                c.request(
                    lambda k: P.encode_subscribe(k, "orders", 0, P.Start.COMMITTED, 1 << 20, group="billing")
                )
            )
            assert sub.offset == 4
            groups = P.parse_info(c.request(P.encode_list_groups))["groups"]
            assert [g["name"] for g in groups] == ["billing"]
    finally:
        b.stop()


# ----------------------------------------------------------------- admin ----


def test_topics_list_describe_delete(client: RawClient, shared: BrokerProcess) -> None:
    client.create_topic("doomed", 2)
    client.publish("doomed", [b"x"] * 3, partition=1)
    names = [t["name"] for t in P.parse_info(client.request(P.encode_list_topics))["topics"]]
    assert "doomed" in names
    desc = P.parse_info(client.request(lambda k: P.encode_describe_topic(k, "doomed")))
    assert [p["end_offset"] for p in desc["partitions"]] == [0, 3]
    P.parse_empty(client.request(lambda k: P.encode_delete_topic(k, "doomed")), P.Opcode.OK)
    assert not (shared.data_dir / "topics" / "doomed").exists()
    with pytest.raises(BrokerErrorReply) as e:
        client.request(lambda k: P.encode_describe_topic(k, "doomed"))
    assert e.value.code == E.UNKNOWN_TOPIC
    info = client.create_topic("doomed", 1)  # the name is free again
    assert info["partitions"][0]["end_offset"] == 0


def test_stats_and_metrics(shared: BrokerProcess, client: RawClient) -> None:
    client.create_topic("metered", 1)
    client.publish("metered", [b"abc"] * 7, acks=P.Acks.ALL)
    stats = P.parse_info(client.request(P.encode_stats))
    assert stats["connections"] >= 1 and stats["messages_in"] >= 7
    assert shared.metrics_port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{shared.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'nanomq_messages_in_total{topic="metered"} 7' in text
    assert "nanomq_publish_ack_seconds_bucket" in text and "nanomq_fsync_seconds_count" in text
    assert 'nanomq_log_bytes{topic="metered",partition="0"}' in text
    assert "nanomq_connections " in text


# -------------------------------------------------- binding and shutdown ----


def _listening_addresses(pid: int) -> list[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state != "0A" or inode not in inodes:  # 0A: LISTEN
                    continue
                addr_hex = local.split(":")[0]
                raw = bytes.fromhex(addr_hex)
                if family == socket.AF_INET:
                    raw = raw[::-1]
                else:
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(family, raw))
    return found


def test_by_default_nothing_listens_beyond_loopback(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d", "--metrics-port", "0") as b:
        addrs = _listening_addresses(b.pid)
        assert len(addrs) == 2, addrs
        assert all(a == "127.0.0.1" for a in addrs), addrs


def test_sigterm_shuts_down_cleanly_and_restart_recovers_topics(tmp_path: Path) -> None:
    b = BrokerProcess(tmp_path / "d", "--auto-create-topics", "--default-partitions", "2")
    with RawClient(b.address) as c:
        c.publish("keep", [b"1", b"2"], partition=1, acks=P.Acks.LEADER)
    b.stop(signal.SIGTERM)
    assert b.proc is not None and b.proc.returncode == 0
    b.start()
    try:
        with RawClient(b.address) as c:
            assert [r.value for r in c.fetch_all("keep", 1)] == [b"1", b"2"]
            assert len(c.offsets("keep")) == 2
    finally:
        b.stop()


@pytest.mark.parametrize(
    "args,rc,message",
    [
        (["--segment-bytes", "1000"], 1, "segment_bytes 1000"),
        (["--tls-cert", "x.pem"], 2, "--tls-cert and --tls-key go together"),
        (["--max-frame-bytes", "100"], 2, "minimum of 4096"),
    ],
)
def test_bad_options_stop_the_broker_at_start_with_a_reason(
    tmp_path: Path, args: list[str], rc: int, message: str
) -> None:
    cmd = [sys.executable, "-m", "nanomq", "broker", "--port", "0", "--data-dir", str(tmp_path / "d"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc and message in proc.stderr
    assert "listening" not in proc.stdout


def test_plain_asyncio_loop_and_port_file(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    with BrokerProcess(tmp_path / "d", "--loop", "asyncio", "--port-file", str(port_file)) as b:
        assert int(port_file.read_text()) == b.port
        with RawClient(b.address) as c:
            c.create_topic("plain", 1)
            values = [bytes([i]) * 40_000 for i in range(10)]  # past the sendfile threshold
            c.publish("plain", values, acks=P.Acks.ALL)
            assert [r.value for r in c.fetch_all("plain", 0)] == values
            sub = P.parse_subscribed(c.request(lambda k: P.encode_subscribe(k, "plain", 0, -2, 1 << 30)))
            got: list[bytes] = []
            while len(got) < 10:
                f = c.pushed.pop(0) if c.pushed else c.recv_frame()
                assert P.parse_records(f).subscription == sub.subscription
                got.extend(x.value for x in record.decode_batch(bytes(P.parse_records(f).records)))
            assert got == values


def test_a_damaged_partition_stops_the_broker_until_the_loss_is_accepted_once(tmp_path: Path) -> None:
    data = tmp_path / "d"
    values = [b"value-%02d-" % i * 8 for i in range(10)]
    with BrokerProcess(data, "--auto-create-topics", "--default-partitions", "1") as b:
        with RawClient(b.address) as c:
            c.publish("t", values, partition=0, acks=P.Acks.ALL)
    (seg,) = (data / "topics" / "t" / "0").glob("*.log")
    raw = bytearray(seg.read_bytes())
    raw[raw.index(values[4]) + 5] ^= 0x10  # inside record 4, with valid records after it
    seg.write_bytes(raw)

    cmd = [sys.executable, "-m", "nanomq", "broker", "--port", "0", "--data-dir", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "listening" not in proc.stdout
    assert "records 4..4" in proc.stderr and "--accept-loss" in proc.stderr

    kept = values[:4] + values[5:]
    with BrokerProcess(data, "--accept-loss") as b, RawClient(b.address) as c:
        assert [r.value for r in c.fetch_all("t", 0)] == kept
    with BrokerProcess(data) as b, RawClient(b.address) as c:  # remembered: no flag needed again
        assert [r.value for r in c.fetch_all("t", 0)] == kept
        c.publish("t", [b"after"], partition=0, acks=P.Acks.ALL)
        assert [r.offset for r in c.fetch_all("t", 0)][-1] == 10


_FRAME_CHURN = """
import resource, sys
from nanomq.broker import keep_frame_memory
took = keep_frame_memory(1 << 20) if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):  # what the broker does per PUBLISH: a frame-sized body, allocated and freed
    body = bytes(bytearray(1 << 20))
    del body
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_broker_keeps_frame_memory_instead_of_faulting_it_in_per_frame() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _FRAME_CHURN, mode], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
        return out[0], int(out[1])

    took, kept = faults("keep")
    _, default = faults("default")
    assert took == "True"
    # 100 frames of 256 pages each: by default most are faulted in again every time
    assert default > 100 * 256 // 2, default
    assert kept < default // 10, (kept, default)
