"""The clients' small pieces: broker addresses, back-off, deadlines, the Message type."""

from __future__ import annotations

import pytest

from nanomq.client._util import DEFAULT_PORT, Backoff, Deadline, Message, format_address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("localhost:1", ("localhost", 1)),
        ("broker", ("broker", DEFAULT_PORT)),
        ("[::1]:9001", ("::1", 9001)),
        ("[::1]", ("::1", DEFAULT_PORT)),
        ("::1", ("::1", DEFAULT_PORT)),
        (":9002", ("127.0.0.1", 9002)),
        (("10.0.0.1", 65535), ("10.0.0.1", 65535)),
    ],
)
def test_addresses_parse_to_host_and_port(text: str | tuple[str, int], expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [("h:x", "'x' is not a number"), ("h:0", "outside 1..65535"), ("h:65536", "outside 1..65535")],
)
def test_bad_addresses_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_address(text)


def test_addresses_format_back() -> None:
    assert format_address("127.0.0.1", 9000) == "127.0.0.1:9000"
    assert format_address("::1", 9000) == "[::1]:9000"


def test_backoff_grows_to_its_maximum_with_jitter_and_resets() -> None:
    b = Backoff(initial=0.1, maximum=0.4, factor=2.0)
    steps = [b.next_delay() for _ in range(6)]
    for delay, step in zip(steps, [0.1, 0.2, 0.4, 0.4, 0.4, 0.4], strict=True):
        assert step / 2 <= delay <= step
    b.reset()
    assert 0.05 <= b.next_delay() <= 0.1


def test_deadline_without_timeout_never_expires() -> None:
    d = Deadline(None)
    assert d.remaining() is None and not d.expired()
    z = Deadline(0)
    assert z.remaining() == 0.0 and z.expired()


def test_message_is_a_named_tuple_with_the_documented_fields() -> None:
    m = Message("demo", 1, 42, 1_700_000_000_000_000_000, None, b"v")
    assert m._fields == ("topic", "partition", "offset", "timestamp", "key", "value")
    assert m.offset == 42 and m.key is None


def _messages_by_views(data: bytes, topic: str, partition: int) -> list[Message]:
    from nanomq import record

    return [
        Message(topic, partition, r.offset, r.timestamp, r.key, r.value) for r in record.iter_records(data)
    ]


def _deliver_body(data: bytes, subscription: int = 5, end: int = 10**6) -> bytes:
    """A DELIVER's body: subscription, partition, first/next/end offsets, then the records."""
    import struct

    return struct.pack("<IiQQQ", subscription, 0, 0, 0, end) + data


def _deliver(body: object, part_of: dict[int, int] | None = None, cls: type = Message) -> object:
    from nanomq._msgcore import deliver_messages

    from nanomq.record import SCAN_ADDRESS

    return deliver_messages(body, "t", {5: 7} if part_of is None else part_of, cls, SCAN_ADDRESS)


def _stamped(values: list[bytes], keys: list[bytes | None] | None = None, codec: str | None = None) -> bytes:
    from nanomq import record

    buf = bytearray(record.encode_batch(values, keys, timestamp_ns=list(range(len(values))), codec=codec))
    record.stamp_offsets(buf, 1000)
    return bytes(buf)


@pytest.mark.parametrize(
    ("values", "keys", "codec", "fast"),
    [
        ([b"a" * 64] * 300, None, None, True),
        ([b""] * 5, None, None, True),
        ([b"v%03d" % i for i in range(50)], [b"k%02d" % (i % 10) for i in range(50)], None, True),
        ([b"x" * 8] * 3, [b"", b"", b""], None, True),  # empty keys are keys, not None
        ([b"a" * 64, b"b" * 60, b"c" * 64], None, None, False),  # same padded size, other lengths
        ([b"a" * 64, b"b" * 64], [b"k1", None], None, False),
        ([b"a" * 64, b"b" * 63], [b"k", b"k1"], None, False),  # equal lengths, keys differ in size
        ([b"z" * 4096] * 4, None, "zstd", False),
        ([b"one"], None, None, True),
        ([b"value"], [b"key"], None, True),
        ([b""], [None], None, True),
        ([b"z" * 4096], None, "zstd", False),
        ([b"y" * 4096], [b"k"], "lz4", False),
    ],
)
def test_a_deliver_read_in_c_gives_the_messages_the_record_views_give(
    values: list[bytes], keys: list[bytes | None] | None, codec: str | None, fast: bool
) -> None:
    """The Subscriber's one-call reading of a DELIVER (uniform, uncompressed records) gives
    exactly the messages that reading every record through a `Record` view gives, and declines
    batches it cannot read that way (the Subscriber then reads them record by record)."""
    if codec is not None:
        pytest.importorskip({"zstd": "zstandard", "lz4": "lz4"}[codec])
    data = _stamped(values, keys, codec)
    got = _deliver(_deliver_body(data, end=4242))
    if not fast:
        assert got is None
        return
    assert isinstance(got, tuple)
    sub, partition, end, msgs, size = got
    assert (sub, partition, end) == (5, 7, 4242)
    assert msgs == _messages_by_views(data, "t", 7)
    assert all(type(m) is Message for m in msgs)
    assert size * len(msgs) == len(data)


def test_a_deliver_the_c_reader_cannot_vouch_for_is_left_to_the_record_reader() -> None:
    data = _stamped([b"abc"] * 4)
    assert _deliver(_deliver_body(data)) is not None
    flipped = bytearray(data)
    flipped[len(data) // 4 + 65] ^= 1  # a value byte of record 1: its CRC fails
    declined = [
        _deliver_body(bytes(flipped)),  # corrupt
        _deliver_body(data[:-8]),  # a record cut short
        _deliver_body(data + bytes(64)),  # trailing zeros
        _deliver_body(b""),  # no records
        _deliver_body(data)[:20],  # shorter than the fixed fields
        bytearray(_deliver_body(data)),  # not bytes
        _deliver_body(data, subscription=6),  # a subscription the subscriber does not have
    ]
    for body in declined:
        assert _deliver(body) is None
    with pytest.raises(TypeError, match="tuple subclass"):
        _deliver(_deliver_body(data), cls=dict)
    with pytest.raises(TypeError):
        _deliver(_deliver_body(data), part_of=[])  # type: ignore[arg-type]


def test_c_built_messages_are_left_out_of_the_cyclic_gc_unless_they_can_hold_anything() -> None:
    import gc

    body = _deliver_body(_stamped([b"abc"] * 3, [b"k"] * 3))
    got = _deliver(body)
    assert isinstance(got, tuple)
    msgs = got[3]
    assert msgs == [Message("t", 7, 1000 + i, i, b"k", b"abc") for i in range(3)]
    assert not any(gc.is_tracked(m) for m in msgs)  # str, ints and bytes: no cycle possible

    class Open(tuple):  # an instance dict could be handed a reference back to the message
        pass

    opened = _deliver(body, cls=Open)
    assert isinstance(opened, tuple)
    assert all(gc.is_tracked(m) for m in opened[3])
