"""nanomq.protocol: every frame round-trips; malformed frames and names are refused with a reason."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomq import protocol as P
from nanomq import record
from nanomq.errors import InvalidTopicNameError, NanoMQError, ProtocolError


def one(data: bytes, max_frame: int = P.DEFAULT_MAX_FRAME) -> P.Frame:
    frames = P.FrameDecoder(max_frame).feed(data)
    assert len(frames) == 1
    return frames[0]


def test_header_layout_is_sixteen_bytes_little_endian() -> None:
    data = P.encode_frame(P.Opcode.PING, 0x01020304, b"xyz")
    assert data[:16] == b"NQ" + bytes([1, P.Opcode.PING]) + b"\0\0\0\0" + bytes([4, 3, 2, 1]) + bytes(
        [3, 0, 0, 0]
    )
    assert data[16:] == b"xyz"


ROUND_TRIPS = [
    (lambda c: P.encode_hello(c, "cli", b"secret"), P.parse_hello, P.Hello("cli", b"secret")),
    (lambda c: P.encode_hello(c, "", None), P.parse_hello, P.Hello("", None)),
    (lambda c: P.encode_hello(c, "x", b""), P.parse_hello, P.Hello("x", b"")),
    (
        lambda c: P.encode_welcome(c, P.Welcome("1.2", 1 << 20, 65536, 100, 0)),
        P.parse_welcome,
        P.Welcome("1.2", 1 << 20, 65536, 100, 0),
    ),
    (
        lambda c: P.encode_error(c, P.ErrorCode.UNKNOWN_TOPIC, "nope é"),
        P.parse_error,
        P.ErrorReply(P.ErrorCode.UNKNOWN_TOPIC, "nope é"),
    ),
    (lambda c: P.encode_publish_ack(c, 3, 10, 2**40), P.parse_publish_ack, P.PublishAck(3, 10, 2**40)),
    (lambda c: P.encode_fetch(c, "t", 2, 99, 4096, 250), P.parse_fetch, P.Fetch("t", 2, 99, 4096, 250)),
    (
        lambda c: P.encode_subscribe(c, "t", 1, P.Start.EARLIEST, 1000, 500, "g"),
        P.parse_subscribe,
        P.Subscribe("t", 1, -2, 1000, 500, "g"),
    ),
    (lambda c: P.encode_subscribed(c, 7, 1, 5, 9), P.parse_subscribed, P.Subscribed(7, 1, 5, 9)),
    (lambda c: P.encode_credit(c, 7, 12345), P.parse_credit, P.Credit(7, 12345)),
    (lambda c: P.encode_unsubscribe(c, 7), P.parse_unsubscribe, 7),
    (
        lambda c: P.encode_join(c, "g", "t", "m-1", 5000, P.Strategy.ROUND_ROBIN),
        P.parse_join,
        P.Join("g", "t", "m-1", 5000, P.Strategy.ROUND_ROBIN),
    ),
    (
        lambda c: P.encode_assignment(c, P.Assignment("m", 4, 5000, 1666, (0, 2, 4))),
        P.parse_assignment,
        P.Assignment("m", 4, 5000, 1666, (0, 2, 4)),
    ),
    (lambda c: P.encode_heartbeat(c, "g", "m", 4), P.parse_heartbeat, P.Heartbeat("g", "m", 4)),
    (lambda c: P.encode_heartbeat_ok(c, 5), P.parse_heartbeat_ok, 5),
    (lambda c: P.encode_leave(c, "g", "m"), P.parse_leave, P.Leave("g", "m")),
    (lambda c: P.encode_rebalance("g", 9), P.parse_rebalance, P.Rebalance("g", 9)),
    (
        lambda c: P.encode_commit(c, "g", "t", {0: 5, 3: 7}, "m", 2),
        P.parse_commit,
        P.Commit("g", "t", "m", 2, ((0, 5), (3, 7))),
    ),
    (lambda c: P.encode_offsets(c, "t", "g"), P.parse_offsets, P.OffsetsRequest("g", "t")),
    (
        lambda c: P.encode_offsets_result(c, [P.PartitionOffsets(0, 1, 9, -1, 123)]),
        P.parse_offsets_result,
        [P.PartitionOffsets(0, 1, 9, -1, 123)],
    ),
    (lambda c: P.encode_time_offset(c, "t", 1, -5), P.parse_time_offset, P.TimeOffset("t", 1, -5)),
    (lambda c: P.encode_time_offset_result(c, 1, 77), P.parse_time_offset_result, (1, 77)),
    (lambda c: P.encode_create_topic(c, "t", 6), P.parse_create_topic, P.CreateTopic("t", 6)),
    (lambda c: P.encode_delete_topic(c, "t"), P.parse_delete_topic, "t"),
    (lambda c: P.encode_describe_topic(c, "t"), P.parse_describe_topic, "t"),
    (lambda c: P.encode_describe_group(c, "g"), P.parse_describe_group, "g"),
    (lambda c: P.encode_info(c, {"a": [1, "x"]}), P.parse_info, {"a": [1, "x"]}),
]


@pytest.mark.parametrize("encode,parse,expected", ROUND_TRIPS)
def test_every_frame_round_trips(encode, parse, expected) -> None:  # type: ignore[no-untyped-def]
    frame = one(encode(4242 if parse is not P.parse_rebalance else 0))
    assert parse(frame) == expected
    assert frame.correlation_id == (4242 if parse is not P.parse_rebalance else 0)


def test_publish_ack_is_read_only_from_an_exact_body_of_the_right_opcode() -> None:
    # (its one-unpack path must not accept what the field reader refuses)
    body = struct.pack("<iIQ", -1, 3, 2**64 - 1)
    assert P.parse_publish_ack(P.Frame(P.Opcode.PUBLISH_ACK, 1, body)) == P.PublishAck(-1, 3, 2**64 - 1)
    for frame in (
        P.Frame(P.Opcode.PUBLISH_ACK, 1, body[:-1]),
        P.Frame(P.Opcode.PUBLISH_ACK, 1, body + b"\0"),
        P.Frame(P.Opcode.PUBLISH_ACK, 1, b""),
        P.Frame(P.Opcode.RECORDS, 1, body),
    ):
        with pytest.raises(ProtocolError):
            P.parse_publish_ack(frame)


@pytest.mark.parametrize(
    "opcode", [P.Opcode.LIST_TOPICS, P.Opcode.LIST_GROUPS, P.Opcode.STATS, P.Opcode.PING]
)
def test_empty_requests_round_trip(opcode: P.Opcode) -> None:
    enc = {
        P.Opcode.LIST_TOPICS: P.encode_list_topics,
        P.Opcode.LIST_GROUPS: P.encode_list_groups,
        P.Opcode.STATS: P.encode_stats,
        P.Opcode.PING: P.encode_ping,
    }[opcode]
    frame = one(enc(3))
    P.parse_empty(frame, opcode)
    with pytest.raises(ProtocolError):
        P.parse_empty(P.Frame(opcode, 3, b"x"), opcode)


def test_publish_carries_the_batch_unchanged() -> None:
    batch = record.encode_batch([b"a", b"bb", b"c" * 100], [b"k", None, b""], codec=record.Codec.ZSTD)
    frame = one(P.encode_publish(9, "orders", -1, P.Acks.ALL, batch, key=b"k"))
    pub = P.parse_publish(frame)
    assert (pub.topic, pub.partition, pub.acks, pub.key) == ("orders", -1, P.Acks.ALL, b"k")
    assert bytes(pub.batch) == batch
    assert [r.value for r in record.decode_batch(bytes(pub.batch))] == [b"a", b"bb", b"c" * 100]
    assert len(P.encode_publish(9, "orders", 0, 1, batch)) == P.PUBLISH_OVERHEAD + len("orders") + len(batch)


@pytest.mark.parametrize("codec", [record.Codec.NONE, record.Codec.LZ4])
@pytest.mark.parametrize("keys", [None, [b"k", None, b""]])
def test_a_publish_built_in_place_equals_encode_publish(codec: record.Codec, keys: list | None) -> None:
    values = [b"a", b"bb", b"c" * 300]
    kw = {"timestamp_ns": [5, 6, 7], "producer_id": 3, "first_sequence": 40, "codec": codec}
    batch = record.encode_batch(values, keys, **kw)
    prefix = P.publish_prefix("orders", 2, P.Acks.LEADER, key=b"k")
    frame = record.encode_batch_after(prefix, values, keys, **kw)
    assert frame[: len(prefix)] == prefix and frame[len(prefix) :] == batch
    sealed = P.seal_frame(frame, P.Opcode.PUBLISH, 2**32 + 9)  # the correlation id wraps as encode_header's
    assert sealed is frame
    assert bytes(sealed) == P.encode_publish(9, "orders", 2, P.Acks.LEADER, batch, key=b"k")
    pub = P.parse_publish(one(bytes(sealed)))
    assert (pub.topic, pub.partition, pub.key, bytes(pub.batch)) == ("orders", 2, b"k", batch)


def test_a_frame_buffer_is_reused_without_resizing_and_only_when_the_batch_fits() -> None:
    prefix = P.publish_prefix("t", 0, P.Acks.LEADER)
    buf = bytearray(4096)
    first = record.encode_batch_after(prefix, [b"a" * 100, b"b"], timestamp_ns=1, into=buf)
    assert isinstance(first, memoryview) and first.obj is buf
    assert bytes(first) == prefix + record.encode_batch([b"a" * 100, b"b"], timestamp_ns=1)
    held = first  # a view of the last frame still alive: the buffer must not be resized
    second = record.encode_batch_after(prefix, [b"c"], timestamp_ns=2, into=buf)
    assert second.obj is buf and len(buf) == 4096
    assert bytes(second) == prefix + record.encode_batch([b"c"], timestamp_ns=2)
    assert bytes(P.seal_frame(second, P.Opcode.PUBLISH, 5)) == P.encode_publish(
        5, "t", 0, P.Acks.LEADER, record.encode_batch([b"c"], timestamp_ns=2)
    )
    big = record.encode_batch_after(prefix, [b"x" * 5000], timestamp_ns=3, into=buf)  # does not fit
    assert isinstance(big, bytearray) and big is not buf and len(buf) == 4096
    assert bytes(big) == prefix + record.encode_batch([b"x" * 5000], timestamp_ns=3)
    packed = record.encode_batch_after(prefix, [b"z" * 500], timestamp_ns=4, codec="lz4", into=buf)
    assert packed is not buf
    assert bytes(packed) == prefix + record.encode_batch([b"z" * 500], timestamp_ns=4, codec="lz4")
    del held


def test_records_frames_put_records_at_an_eight_aligned_offset() -> None:
    batch = record.encode_batch([b"x", b"y"], first_offset=10)
    data = P.encode_records(P.Opcode.DELIVER, 0, 5, 2, 10, 12, 20, batch)
    assert data[P.RECORDS_OVERHEAD :] == batch and P.RECORDS_OVERHEAD % 8 == 0
    r = P.parse_records(one(data))
    assert (r.subscription, r.partition, r.first_offset, r.next_offset, r.end_offset) == (5, 2, 10, 12, 20)
    assert bytes(r.records) == batch


def test_decoder_handles_any_split_of_the_stream() -> None:
    frames = [P.encode_fetch(i, f"t{i}", i, i * 3) for i in range(50)]
    stream = b"".join(frames)
    rnd = random.Random(7)
    for _ in range(20):
        dec = P.FrameDecoder()
        got: list[P.Frame] = []
        pos = 0
        while pos < len(stream):
            n = rnd.randint(1, 40)
            got.extend(dec.feed(stream[pos : pos + n]))
            pos += n
        assert [P.parse_fetch(f).topic for f in got] == [f"t{i}" for i in range(50)]
        assert dec.buffered == 0


def test_decoded_frames_own_their_bytes_whatever_buffer_the_stream_came_in() -> None:
    # Frames are cut straight out of what feed() got when nothing is buffered: a caller that
    # reuses its receive buffer must not change frames already returned.
    frames = [P.encode_fetch(i, f"topic-{i}", i, i * 3) for i in range(200)]
    stream = b"".join(frames)
    rnd = random.Random(11)
    dec = P.FrameDecoder()
    got: list[P.Frame] = []
    scratch = bytearray(400)
    pos = 0
    while pos < len(stream):
        n = min(rnd.randint(1, 400), len(stream) - pos)
        scratch[:n] = stream[pos : pos + n]
        got.extend(dec.feed(memoryview(scratch)[:n]))
        scratch[:] = bytes(len(scratch))  # the buffer is reused for the next read
        pos += n
    want = [(i, f"topic-{i}") for i in range(200)]
    assert [(f.correlation_id, P.parse_fetch(f).topic) for f in got] == want
    assert dec.buffered == 0


@pytest.mark.parametrize("length", [P.DEFAULT_MAX_FRAME - 16 + 1, 2**32 - 1, 2**31])
def test_oversized_length_is_refused_from_the_header_alone(length: int) -> None:
    dec = P.FrameDecoder()
    header = struct.pack("<2sBBHHII", b"NQ", 1, P.Opcode.PUBLISH, 0, 0, 77, length)
    with pytest.raises(ProtocolError) as e:
        dec.feed(header)  # no body at all: the limit is known from the header
    assert e.value.code == P.ErrorCode.FRAME_TOO_LARGE
    assert e.value.correlation_id == 77
    assert str(P.DEFAULT_MAX_FRAME) in str(e.value)


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    dec = P.FrameDecoder(max_frame=1000)
    data = P.encode_frame(P.Opcode.INFO, 1, b"x" * (1000 - 16))
    assert dec.feed(data)[0].body == b"x" * 984


@pytest.mark.parametrize(
    "header,code",
    [
        (struct.pack("<2sBBHHII", b"XX", 1, 5, 0, 0, 1, 0), P.ErrorCode.INVALID_FRAME),
        (struct.pack("<2sBBHHII", b"NQ", 2, 5, 0, 0, 1, 0), P.ErrorCode.UNSUPPORTED_VERSION),
        (struct.pack("<2sBBHHII", b"NQ", 0, 5, 0, 0, 1, 0), P.ErrorCode.UNSUPPORTED_VERSION),
        (struct.pack("<2sBBHHII", b"NQ", 1, 5, 1, 0, 1, 0), P.ErrorCode.INVALID_FRAME),
        (struct.pack("<2sBBHHII", b"NQ", 1, 5, 0, 9, 1, 0), P.ErrorCode.INVALID_FRAME),
    ],
)
def test_bad_headers_are_refused_with_their_code(header: bytes, code: P.ErrorCode) -> None:
    with pytest.raises(ProtocolError) as e:
        P.FrameDecoder().feed(header)
    assert e.value.code == code
    assert isinstance(e.value, NanoMQError) and isinstance(e.value, ValueError)


def test_unknown_opcodes_decode_as_plain_ints() -> None:
    frame = one(P.encode_frame(0xEE, 1, b""))
    assert frame.opcode == 0xEE and not isinstance(frame.opcode, P.Opcode)


@pytest.mark.parametrize("encode,parse,_", ROUND_TRIPS)
def test_truncated_and_padded_bodies_are_invalid_frames(encode, parse, _) -> None:  # type: ignore[no-untyped-def]
    frame = one(encode(1))
    if parse is P.parse_info:
        bodies = [frame.body[:-1], b"[1]"]
    else:
        bodies = [frame.body[:-1], frame.body + b"\0"] if frame.body else [b"\0"]
    for body in bodies:
        with pytest.raises(ProtocolError) as e:
            parse(P.Frame(frame.opcode, 1, body))
        assert e.value.code in (P.ErrorCode.INVALID_FRAME, P.ErrorCode.INVALID_REQUEST)


def test_parsers_refuse_the_wrong_opcode() -> None:
    with pytest.raises(ProtocolError, match="expected a WELCOME"):
        P.parse_welcome(one(P.encode_pong(1)))


def test_field_values_out_of_range_are_invalid() -> None:
    batch = record.encode(b"x")
    frame = one(P.encode_publish(1, "t", 0, 7, batch))
    with pytest.raises(ProtocolError) as e:
        P.parse_publish(frame)
    assert e.value.code == P.ErrorCode.INVALID_REQUEST and "acks level 7" in str(e.value)
    with pytest.raises(ProtocolError):
        P.parse_join(one(P.encode_join(1, "g", "t", "", 5000, 9)))
    with pytest.raises(ProtocolError, match="UTF-8"):
        P.parse_fetch(P.Frame(P.Opcode.FETCH, 1, b"\x02\x00\xff\xfe" + bytes(20)))


def test_error_codes_say_whether_they_close_the_connection() -> None:
    assert P.ErrorCode.INVALID_FRAME.fatal and P.ErrorCode.NOT_AUTHORIZED.fatal
    assert not P.ErrorCode.UNKNOWN_TOPIC.fatal and not P.ErrorCode.STORAGE_ERROR.fatal


VALID = ["a", "A-b_c.d", "0", "x" * 249, "..a", "a..", ".hidden", "-", "_"]


@pytest.mark.parametrize("name", VALID)
def test_valid_topic_names(name: str) -> None:
    assert P.validate_topic_name(name) == name


HOSTILE = [
    "",
    ".",
    "..",
    "a/b",
    "/etc",
    "../x",
    "a\0b",
    "x" * 250,
    "a b",
    "a\\b",
    "é",
    "a\nb",
    "*",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_invalid_topic_names_say_why(name: str) -> None:
    with pytest.raises(InvalidTopicNameError) as e:
        P.validate_topic_name(name)
    assert "topic name" in str(e.value) and e.value.reason
    assert isinstance(e.value, ValueError)


def test_topic_name_must_be_a_str() -> None:
    with pytest.raises(InvalidTopicNameError, match="must be a str"):
        P.validate_topic_name(b"abc")


def test_long_name_message_names_the_limit() -> None:
    with pytest.raises(InvalidTopicNameError, match="250 characters long, the limit is 249"):
        P.validate_topic_name("y" * 250)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_and_parsers_never_fail_other_than_protocol_error(data: bytes) -> None:
    dec = P.FrameDecoder(max_frame=4096)
    try:
        frames = dec.feed(P.encode_header(P.Opcode.PUBLISH, 1, len(data)) + data)
    except ProtocolError:
        return
    for parse in (
        P.parse_publish,
        P.parse_fetch,
        P.parse_subscribe,
        P.parse_commit,
        P.parse_join,
        P.parse_hello,
    ):
        try:
            parse(frames[0])
        except ProtocolError:
            pass


def _outcome(parse: Callable[[P.Frame], tuple], frame: P.Frame) -> tuple:
    try:
        got = parse(frame)
    except ProtocolError as exc:
        return ("error", exc.code, str(exc))
    return ("ok", *(bytes(x) if isinstance(x, memoryview) else x for x in got))


_publish_bodies = st.one_of(
    st.binary(max_size=80),  # anything
    st.builds(  # well formed, with any field values and a random tail cut off or added
        lambda topic, fixed, key, batch, cut: (
            struct.pack("<H", len(topic)) + topic + fixed + struct.pack("<H", len(key)) + key + batch
        )[: len(topic) + len(key) + 10 + len(batch) - cut],
        st.one_of(st.binary(max_size=12), st.text(max_size=6).map(str.encode)),
        st.builds(  # partition, acks, has_key: often near the edges of what is valid
            lambda *f: struct.pack("<iBB", *f),
            st.integers(-(2**31), 2**31 - 1),
            st.one_of(st.integers(0, 4), st.integers(0, 255)),
            st.integers(0, 3),
        ),
        st.binary(max_size=8),
        st.binary(max_size=40),
        st.integers(0, 12),
    ),
)


@settings(max_examples=500, deadline=None)
@given(_publish_bodies)
def test_the_quick_publish_parse_agrees_with_the_field_reader(body: bytes) -> None:
    """parse_publish reads a well-formed body with two unpacks and hands anything else to the
    field-by-field reader: for every body both give the same request, or the same error."""
    frame = P.Frame(P.Opcode.PUBLISH, 5, body)
    assert _outcome(P.parse_publish, frame) == _outcome(P._parse_publish_fields, frame)


def test_a_short_records_body_is_named_and_a_whole_one_read_at_once() -> None:
    frame = one(P.encode_records(P.Opcode.DELIVER, 0, 4, 1, 10, 12, 30, b"xyz"))
    assert P.parse_records(frame) == P.Records(4, 1, 10, 12, 30, memoryview(b"xyz"))
    with pytest.raises(ProtocolError, match="DELIVER body too short: needs 32 bytes, has 31"):
        P.parse_records(P.Frame(P.Opcode.DELIVER, 0, frame.body[:31]))


def test_one_struct_headers_equal_the_header_and_fields_encoded_apart() -> None:
    assert P.encode_publish_ack(2**32 + 5, -1, 3, 2**40) == P.encode_frame(
        P.Opcode.PUBLISH_ACK, 5, struct.pack("<iIQ", -1, 3, 2**40)
    )
    head = P.encode_records_header(P.Opcode.DELIVER, 7, 9, 2, 100, 103, 200, 384)
    assert head == P.encode_header(P.Opcode.DELIVER, 7, 32 + 384) + struct.pack("<IiQQQ", 9, 2, 100, 103, 200)
