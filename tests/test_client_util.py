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
        # one record (a caught-up subscriber's DELIVER) takes a shorter path: the same messages
        ([b"value"], [b"key"], None, True),
        ([b""], [None], None, True),
        ([b"z" * 4096], None, "zstd", False),
        ([b"y" * 4096], [b"k"], "lz4", False),
    ],
)
def test_bulk_decoding_matches_the_record_views(
    values: list[bytes], keys: list[bytes | None] | None, codec: str | None, fast: bool
) -> None:
    """The Subscriber's column-wise decoding of a DELIVER batch gives exactly the messages that
    reading every record through a `Record` view gives, and declines batches it cannot read."""
    from nanomq import record
    from nanomq.client.subscriber import _decode_uniform

    if codec is not None:
        pytest.importorskip({"zstd": "zstandard", "lz4": "lz4"}[codec])
    buf = bytearray(record.encode_batch(values, keys, timestamp_ns=list(range(len(values))), codec=codec))
    record.stamp_offsets(buf, 1000)
    data = bytes(buf)
    record.validate_batch(data, 1000)
    got = _decode_uniform(data, "t", 7)
    if not fast:
        assert got is None
        return
    assert got is not None
    msgs, size = got
    assert msgs == _messages_by_views(data, "t", 7)
    assert all(type(m) is Message for m in msgs)
    assert size * len(msgs) == len(data)


def test_the_c_message_builder_refuses_sizes_that_do_not_tile_the_buffer() -> None:
    from nanomq._msgcore import uniform_messages

    from nanomq import record

    data = record.encode_batch([b"abc"] * 4, timestamp_ns=7)
    size = len(data) // 4
    msgs = uniform_messages(memoryview(data), size, 0, 3, False, "t", 1, Message)
    assert msgs == [Message("t", 1, i, 7, None, b"abc") for i in range(4)]
    assert all(type(m) is Message for m in msgs)
    huge = 2**63 - 1  # sizes whose sum would overflow
    bads = [(size + 8, 0, 3), (size - 1, 0, 3), (size, 0, size), (size, -1, 3), (0, 0, 3), (size, huge, huge)]
    for bad in bads:
        with pytest.raises(ValueError, match="do not tile"):
            uniform_messages(data, *bad, False, "t", 1, Message)
    with pytest.raises(TypeError, match="tuple subclass"):
        uniform_messages(data, size, 0, 3, False, "t", 1, dict)
    assert uniform_messages(b"", size, 0, 3, False, "t", 1, Message) == []


def test_c_built_messages_are_left_out_of_the_cyclic_gc_unless_they_can_hold_anything() -> None:
    import gc

    from nanomq._msgcore import uniform_messages

    from nanomq import record

    data = record.encode_batch([b"abc"] * 3, [b"k"] * 3, timestamp_ns=7)
    size = len(data) // 3
    msgs = uniform_messages(data, size, 1, 3, True, "t", 1, Message)
    assert msgs == [Message("t", 1, i, 7, b"k", b"abc") for i in range(3)]
    assert not any(gc.is_tracked(m) for m in msgs)  # str, ints and bytes: no cycle possible

    class Open(tuple):  # an instance dict could be handed a reference back to the message
        pass

    opened = uniform_messages(data, size, 1, 3, True, "t", 1, Open)
    assert all(gc.is_tracked(m) for m in opened)
