"""The NanoMQ wire protocol: frame layout, opcodes, error codes, limits (docs/PROTOCOL.md is the spec).

Every frame is a 16-byte little-endian header and a body:

```
off size field
  0   2  magic           b"NQ"
  2   1  version         PROTOCOL_VERSION (1)
  3   1  opcode          Opcode
  4   2  flags           0 (reserved)
  6   2  reserved        0
  8   4  correlation id  u32, echoed by the reply; 0 on frames the broker pushes unasked
 12   4  body length     u32, bytes after the header; HEADER_SIZE + body length <= max frame
```

The functions here are pure: `encode_*` build the bytes of one frame, `parse_*` read the body
of a `Frame` into a NamedTuple and raise `ProtocolError` (code INVALID_FRAME) when it is
malformed. `FrameDecoder` cuts a byte stream into frames and checks the length limit from the
header alone, before a byte of the body is buffered. PUBLISH bodies and the RECORDS/DELIVER
replies carry record batches in the record format (docs/FORMAT.md) unchanged.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from nanomq.errors import InvalidTopicNameError, ProtocolError

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAYLOAD",
    "MAX_TOPIC_LENGTH",
    "PROTOCOL_VERSION",
    "PUBLISH_OVERHEAD",
    "RECORDS_OVERHEAD",
    "Acks",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "Opcode",
    "Start",
    "Strategy",
    "validate_topic_name",
]

MAGIC = b"NQ"
PROTOCOL_VERSION = 1
HEADER_SIZE = 16
DEFAULT_MAX_FRAME = 1 << 20  # header + body
MAX_PAYLOAD = 1 << 16  # a record's (uncompressed) value, as nanomq.record enforces
DEFAULT_MAX_BATCH = 16384  # records in one PUBLISH: 1 MiB of empty records
MAX_TOPIC_LENGTH = 249
MAX_GROUP_LENGTH = 249
MAX_STRING = 0xFFFF

_T = TypeVar("_T")
_Writable = TypeVar("_Writable", bytearray, memoryview)
_HEADER = struct.Struct("<2sBBHHII")
assert _HEADER.size == HEADER_SIZE
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}", re.ASCII)


class Opcode(enum.IntEnum):
    """What a frame is. Requests come from the client; replies and pushes from the broker."""

    HELLO = 0x01  # client: first frame of a connection
    WELCOME = 0x02  # broker: handshake accepted, with the limits
    ERROR = 0x03  # broker: a request failed (code + message)
    OK = 0x04  # broker: a request succeeded, nothing to say
    PING = 0x05  # client
    PONG = 0x06  # broker
    INFO = 0x07  # broker: a JSON document (admin replies)
    PUBLISH = 0x10  # client: topic, partition, acks, key, batch
    PUBLISH_ACK = 0x11  # broker: partition, count, base offset
    FETCH = 0x20  # client: one long-poll read
    RECORDS = 0x21  # broker: reply to FETCH (records of one partition)
    SUBSCRIBE = 0x22  # client: start a push subscription with credit
    SUBSCRIBED = 0x23  # broker: reply to SUBSCRIBE
    DELIVER = 0x24  # broker, pushed: records of a subscription (same body as RECORDS)
    CREDIT = 0x25  # client: more bytes a subscription may push (no reply)
    UNSUBSCRIBE = 0x26  # client
    JOIN = 0x30  # client: join (or re-join) a consumer group
    ASSIGNMENT = 0x31  # broker: reply to JOIN: member id, generation, partitions
    HEARTBEAT = 0x32  # client
    HEARTBEAT_OK = 0x33  # broker: the group's current generation
    LEAVE = 0x34  # client
    REBALANCE = 0x35  # broker, pushed: the group moved to a new generation; re-JOIN
    COMMIT = 0x40  # client: committed offsets of a group
    OFFSETS = 0x41  # client: first/end/committed offsets of a topic's partitions
    OFFSETS_RESULT = 0x42  # broker
    TIME_OFFSET = 0x43  # client: first offset at or after a timestamp
    TIME_OFFSET_RESULT = 0x44  # broker
    CREATE_TOPIC = 0x50
    DELETE_TOPIC = 0x51
    LIST_TOPICS = 0x52
    DESCRIBE_TOPIC = 0x53
    LIST_GROUPS = 0x54
    DESCRIBE_GROUP = 0x55
    STATS = 0x56


#: Opcodes a client may send (anything else from a client is an invalid frame).
CLIENT_OPCODES = frozenset(
    {
        Opcode.HELLO,
        Opcode.PING,
        Opcode.PUBLISH,
        Opcode.FETCH,
        Opcode.SUBSCRIBE,
        Opcode.CREDIT,
        Opcode.UNSUBSCRIBE,
        Opcode.JOIN,
        Opcode.HEARTBEAT,
        Opcode.LEAVE,
        Opcode.COMMIT,
        Opcode.OFFSETS,
        Opcode.TIME_OFFSET,
        Opcode.CREATE_TOPIC,
        Opcode.DELETE_TOPIC,
        Opcode.LIST_TOPICS,
        Opcode.DESCRIBE_TOPIC,
        Opcode.LIST_GROUPS,
        Opcode.DESCRIBE_GROUP,
        Opcode.STATS,
    }
)


class ErrorCode(enum.IntEnum):
    """The code of an ERROR frame. Codes below 100 close the connection after the ERROR frame."""

    # connection-fatal: the broker sends the ERROR and closes the connection
    INVALID_FRAME = 1  # bad magic, reserved bits set, malformed body, opcode not a client request
    UNSUPPORTED_VERSION = 2  # the header's protocol version is not one the broker speaks
    NOT_AUTHORIZED = 3  # auth token missing or wrong
    HANDSHAKE_REQUIRED = 4  # a request before HELLO, or a second HELLO
    FRAME_TOO_LARGE = 5  # header + body length over the max frame
    TOO_MANY_CONNECTIONS = 6
    TIMEOUT = 7  # no HELLO within the handshake timeout, or idle past the idle timeout
    SHUTTING_DOWN = 8
    # request errors: the connection stays usable
    UNKNOWN_TOPIC = 100
    UNKNOWN_PARTITION = 101
    INVALID_TOPIC = 102  # name not [A-Za-z0-9._-]{1,249}, or "." / ".."
    TOPIC_EXISTS = 103
    MESSAGE_TOO_LARGE = 104  # a record's value or key over its limit
    CORRUPT_BATCH = 105  # the PUBLISH batch is not a run of whole valid records
    BATCH_TOO_LARGE = 106  # more records in one PUBLISH than max batch
    OFFSET_OUT_OF_RANGE = 107
    INVALID_REQUEST = 108  # a field out of its range (acks level, partition count, credit, ...)
    UNKNOWN_GROUP = 110
    UNKNOWN_MEMBER = 111  # member id not in the group (never joined, left, or expired)
    ILLEGAL_GENERATION = 112  # the request names a generation that is not the group's current one
    NOT_ASSIGNED = 113  # the partition is not assigned to this member in this generation
    UNKNOWN_SUBSCRIPTION = 120
    TOO_MANY_SUBSCRIPTIONS = 121
    STORAGE_ERROR = 130  # the log failed (fsync error, disk full): nothing was acknowledged
    INTERNAL = 199

    @property
    def fatal(self) -> bool:
        """True when the broker closes the connection after sending this code."""
        return self < 100


class Acks(enum.IntEnum):
    """When the broker acknowledges a PUBLISH."""

    NONE = 0  # never: no reply unless the publish fails
    LEADER = 1  # after the batch is appended to the log (page cache)
    ALL = 2  # after the batch is on disk (fdatasync; group commit across connections)


class Strategy(enum.IntEnum):
    """How a consumer group spreads partitions across its members."""

    RANGE = 0  # contiguous runs of partitions, members in id order
    ROUND_ROBIN = 1  # partition i to member i mod n


class Start(enum.IntEnum):
    """Special start offsets of SUBSCRIBE."""

    LATEST = -1  # the log's end (only records published from now on)
    EARLIEST = -2  # the log's first retained record
    COMMITTED = -3  # the group's committed offset (earliest when none)


def validate_topic_name(name: object) -> str:
    """Return `name` when it is a valid topic name; raise InvalidTopicNameError saying why not.

    Valid: a str of 1-249 characters from [A-Za-z0-9._-], and neither "." nor "..". Topic names
    become directory names, so nothing else is ever allowed near the filesystem.
    """
    if not isinstance(name, str):
        raise InvalidTopicNameError(name, f"a topic name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidTopicNameError(name, "it is empty")
    if len(name) > MAX_TOPIC_LENGTH:
        raise InvalidTopicNameError(
            name, f"it is {len(name)} characters long, the limit is {MAX_TOPIC_LENGTH}"
        )
    if name in (".", ".."):
        raise InvalidTopicNameError(name, f"{name!r} is reserved")
    if _TOPIC_RE.fullmatch(name) is None:
        bad = next(c for c in name if _TOPIC_RE.fullmatch(c) is None)
        raise InvalidTopicNameError(name, f"character {bad!r} is not allowed (only A-Z a-z 0-9 . _ -)")
    return name


# ------------------------------------------------------------------ frames ----


_OPCODES = {int(o): o for o in Opcode}  # a dict lookup, not an enum call (≈ 0.8 µs) per frame


class Frame(NamedTuple):
    """One frame: header fields and the body (bytes after the header)."""

    opcode: int  # an Opcode when known; a plain int otherwise
    correlation_id: int
    body: bytes
    flags: int = 0


def encode_header(opcode: int, correlation_id: int, body_length: int, flags: int = 0) -> bytes:
    """The 16-byte header of a frame whose body is `body_length` bytes."""
    return _HEADER.pack(MAGIC, PROTOCOL_VERSION, opcode, flags, 0, correlation_id & 0xFFFFFFFF, body_length)


def encode_frame(opcode: int, correlation_id: int, body: bytes | bytearray | memoryview = b"") -> bytes:
    """Header and body of one frame as one bytes object."""
    return encode_header(opcode, correlation_id, len(body)) + bytes(body)


class FrameDecoder:
    """Cuts a byte stream into frames; works for asyncio protocols and blocking sockets alike.

    `feed(data)` returns the frames completed by `data` (possibly none). The header is checked
    as soon as its 16 bytes are in — magic, version, reserved bits, and the length against
    `max_frame` — so a hostile length is refused before any of its body is buffered. A bad
    header raises ProtocolError (with `code` and the frame's `correlation_id`); the stream is
    unusable afterwards. At most `max_frame` bytes are held at any time beyond what `feed` got.
    """

    __slots__ = ("_buf", "_need", "_pending", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < HEADER_SIZE:
            raise ValueError(f"max_frame must be at least {HEADER_SIZE}, got {max_frame}")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pending: tuple[int, int, int, int] | None = None  # opcode, flags, corr, body length

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes from the stream; return every frame they complete, in order."""
        buf = self._buf
        # Frames are cut straight out of `data` when nothing is buffered (the common case:
        # whole frames per read), else out of the buffer; each body is copied once.
        if buf:
            buf += data
            src: bytes | bytearray | memoryview = buf
        else:
            src = data
        frames: list[Frame] = []
        pos = 0
        with memoryview(src) as view:
            end = view.nbytes
            while True:
                if self._pending is None:
                    if end - pos < HEADER_SIZE:
                        break
                    self._pending = self._check_header(view, pos)
                    pos += HEADER_SIZE
                opcode, flags, corr, length = self._pending
                if end - pos < length:
                    break
                frames.append(Frame(opcode, corr, view[pos : pos + length].tobytes(), flags))
                pos += length
                self._pending = None
            if src is not buf and pos < end:
                buf += view[pos:]  # the start of an incomplete frame (at most max_frame bytes)
        if src is buf and pos:
            del buf[:pos]
        return frames

    def _check_header(self, buf: bytearray | memoryview, pos: int) -> tuple[int, int, int, int]:
        magic, version, opcode, flags, reserved, corr, length = _HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise ProtocolError(
                ErrorCode.INVALID_FRAME, f"bad frame magic {bytes(magic)!r} (expected {MAGIC!r})"
            )
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {version} is not supported (this side speaks {PROTOCOL_VERSION})",
                correlation_id=corr,
            )
        if flags or reserved:
            raise ProtocolError(
                ErrorCode.INVALID_FRAME,
                f"reserved header bits set (flags {flags:#x}, reserved {reserved:#x})",
                correlation_id=corr,
            )
        if HEADER_SIZE + length > self.max_frame:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {HEADER_SIZE + length} bytes exceeds the limit of {self.max_frame} bytes",
                correlation_id=corr,
            )
        return _OPCODES.get(opcode, opcode), flags, corr, length


# ------------------------------------------------------- body read / write ----


class _Reader:
    """Reads little-endian fields from a body, raising ProtocolError when it runs out."""

    __slots__ = ("body", "pos", "what")

    def __init__(self, frame: Frame, what: str) -> None:
        self.body = frame.body
        self.pos = 0
        self.what = what

    def _short(self, need: int) -> ProtocolError:
        return ProtocolError(
            ErrorCode.INVALID_FRAME,
            f"{self.what} body too short: needs {self.pos + need} bytes, has {len(self.body)}",
        )

    def take(self, st: struct.Struct) -> tuple[Any, ...]:
        if self.pos + st.size > len(self.body):
            raise self._short(st.size)
        values = st.unpack_from(self.body, self.pos)
        self.pos += st.size
        return values

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise self._short(n)
        data = self.body[self.pos : self.pos + n]
        self.pos += n
        return bytes(data)

    def string(self, field: str) -> str:
        (n,) = self.take(_U16)
        data = self.raw(n)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.INVALID_FRAME, f"{self.what}: {field} is not valid UTF-8") from None

    def rest(self) -> memoryview:
        view = memoryview(self.body)[self.pos :]
        self.pos = len(self.body)
        return view

    def done(self) -> None:
        if self.pos != len(self.body):
            raise ProtocolError(
                ErrorCode.INVALID_FRAME,
                f"{self.what} body has {len(self.body) - self.pos} trailing bytes",
            )


_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


def _str(value: str | bytes, field: str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) > MAX_STRING:
        raise ValueError(f"{field} of {len(data)} bytes exceeds the limit of {MAX_STRING} bytes")
    return _U16.pack(len(data)) + data


def _parse_fixed(frame: Frame, opcode: Opcode, layout: struct.Struct, cls: type[_T]) -> _T:
    """The body of an `opcode` frame that is exactly `layout`, as a `cls` NamedTuple."""
    _expect(frame, opcode)
    r = _Reader(frame, opcode.name)
    value = cls(*r.take(layout))
    r.done()
    return value


def _expect(frame: Frame, opcode: Opcode) -> None:
    if frame.opcode != opcode:
        raise ProtocolError(
            ErrorCode.INVALID_FRAME, f"expected a {opcode.name} frame, got opcode {int(frame.opcode):#04x}"
        )


# --------------------------------------------------------------- handshake ----


class Hello(NamedTuple):
    client_id: str
    auth_token: bytes | None


def encode_hello(correlation_id: int, client_id: str = "", auth_token: bytes | str | None = None) -> bytes:
    """HELLO: str client_id, u8 has_token, str auth_token (empty when has_token is 0)."""
    if isinstance(auth_token, str):
        auth_token = auth_token.encode()
    body = (
        _str(client_id, "client_id")
        + _U8.pack(auth_token is not None)
        + _str(auth_token or b"", "auth_token")
    )
    return encode_frame(Opcode.HELLO, correlation_id, body)


def parse_hello(frame: Frame) -> Hello:
    r = _Reader(frame, "HELLO")
    client_id = r.string("client_id")
    (has_token,) = r.take(_U8)
    (n,) = r.take(_U16)
    token = r.raw(n)
    r.done()
    if has_token > 1:
        raise ProtocolError(ErrorCode.INVALID_FRAME, f"HELLO: has_token must be 0 or 1, got {has_token}")
    return Hello(client_id, token if has_token else None)


class Welcome(NamedTuple):
    broker_version: str
    max_frame: int
    max_payload: int
    max_batch: int
    idle_timeout_ms: int  # 0: none


_WELCOME = struct.Struct("<IIII")


def encode_welcome(correlation_id: int, w: Welcome) -> bytes:
    """WELCOME: str broker_version, u32 max_frame, u32 max_payload, u32 max_batch, u32 idle_timeout_ms."""
    body = _str(w.broker_version, "broker_version") + _WELCOME.pack(
        w.max_frame, w.max_payload, w.max_batch, w.idle_timeout_ms
    )
    return encode_frame(Opcode.WELCOME, correlation_id, body)


def parse_welcome(frame: Frame) -> Welcome:
    _expect(frame, Opcode.WELCOME)
    r = _Reader(frame, "WELCOME")
    version = r.string("broker_version")
    fields = r.take(_WELCOME)
    r.done()
    return Welcome(version, *fields)


class ErrorReply(NamedTuple):
    code: int  # an ErrorCode when known
    message: str


def encode_error(correlation_id: int, code: int, message: str) -> bytes:
    """ERROR: u16 code, str message (truncated to 65535 bytes)."""
    data = message.encode("utf-8", "replace")[:MAX_STRING]
    return encode_frame(Opcode.ERROR, correlation_id, _U16.pack(code) + _U16.pack(len(data)) + data)


def parse_error(frame: Frame) -> ErrorReply:
    _expect(frame, Opcode.ERROR)
    r = _Reader(frame, "ERROR")
    (code,) = r.take(_U16)
    (n,) = r.take(_U16)
    message = r.raw(n).decode("utf-8", "replace")
    r.done()
    try:
        code = ErrorCode(code)
    except ValueError:
        pass
    return ErrorReply(code, message)


def _encode_empty(opcode: Opcode, doc: str):  # -> the encoder of a frame with an empty body
    def encode(correlation_id: int) -> bytes:
        return encode_header(opcode, correlation_id, 0)

    encode.__doc__ = f"{opcode.name}: empty body. {doc}".rstrip()
    return encode


encode_ok = _encode_empty(Opcode.OK, "")
encode_ping = _encode_empty(Opcode.PING, "The broker answers PONG.")
encode_pong = _encode_empty(Opcode.PONG, "")
encode_list_topics = _encode_empty(Opcode.LIST_TOPICS, 'Reply INFO {"topics": [topic description, ...]}.')
encode_list_groups = _encode_empty(Opcode.LIST_GROUPS, 'Reply INFO {"groups": [group description, ...]}.')
encode_stats = _encode_empty(Opcode.STATS, "Reply INFO (broker statistics).")


def parse_empty(frame: Frame, opcode: Opcode) -> None:
    """Check that `frame` is an `opcode` frame with an empty body."""
    _expect(frame, opcode)
    _Reader(frame, opcode.name).done()


# ----------------------------------------------------------------- publish ----


class Publish(NamedTuple):
    topic: str
    partition: int  # -1: the broker picks (hash of key, or round-robin without a key)
    acks: Acks
    key: bytes | None  # the partitioning key
    batch: memoryview  # records in the record format, offsets 0


_PUBLISH = struct.Struct("<iBB")  # partition, acks, has_key
#: Bytes of a PUBLISH frame besides the topic name, the partitioning key and the batch.
PUBLISH_OVERHEAD = HEADER_SIZE + 2 + _PUBLISH.size + 2


def encode_publish(
    correlation_id: int,
    topic: str,
    partition: int,
    acks: int,
    batch: bytes | bytearray | memoryview,
    *,
    key: bytes | None = None,
) -> bytes:
    """PUBLISH: str topic, i32 partition, u8 acks, u8 has_key, str key, then the batch to the end."""
    body_head = _publish_head(topic, partition, acks, key)
    return (
        encode_header(Opcode.PUBLISH, correlation_id, len(body_head) + len(batch)) + body_head + bytes(batch)
    )


def _publish_head(topic: str, partition: int, acks: int, key: bytes | None) -> bytes:
    return _str(topic, "topic") + _PUBLISH.pack(partition, acks, key is not None) + _str(key or b"", "key")


def publish_prefix(topic: str, partition: int, acks: int, *, key: bytes | None = None) -> bytes:
    """What precedes the batch in a PUBLISH frame: room for the header (see `seal_frame`) and
    the body's fields. A publisher encodes the records straight behind it
    (`record.encode_batch_after`), so a frame is built without copying its batch."""
    return bytes(HEADER_SIZE) + _publish_head(topic, partition, acks, key)


def seal_frame(frame: _Writable, opcode: int, correlation_id: int) -> _Writable:
    """Write the header into the first HEADER_SIZE bytes of `frame` (its body is the rest)."""
    _HEADER.pack_into(
        frame, 0, MAGIC, PROTOCOL_VERSION, opcode, 0, 0, correlation_id & 0xFFFFFFFF, len(frame) - HEADER_SIZE
    )
    return frame


_PUBLISH_KEY = struct.Struct("<iBBH")  # partition, acks, has_key, key length
_ACKS = (Acks.NONE, Acks.LEADER, Acks.ALL)


def parse_publish(frame: Frame) -> Publish:
    # The broker's busiest parse: a well-formed body is read with two unpacks; anything else
    # takes the field-by-field reader below, which names what is wrong.
    body = frame.body
    try:
        (n,) = _U16.unpack_from(body, 0)
        partition, acks, has_key, klen = _PUBLISH_KEY.unpack_from(body, 2 + n)
        start = 2 + n + _PUBLISH_KEY.size + klen
        if acks <= 2 and has_key <= 1 and start <= len(body):
            topic = str(body[2 : 2 + n], "utf-8")
            key = bytes(body[start - klen : start]) if has_key else None
            return Publish(topic, partition, _ACKS[acks], key, memoryview(body)[start:])
    except (struct.error, UnicodeDecodeError):
        pass
    return _parse_publish_fields(frame)


def _parse_publish_fields(frame: Frame) -> Publish:
    r = _Reader(frame, "PUBLISH")
    topic = r.string("topic")
    partition, acks, has_key = r.take(_PUBLISH)
    (n,) = r.take(_U16)
    key = r.raw(n)
    if has_key > 1:
        raise ProtocolError(ErrorCode.INVALID_FRAME, f"PUBLISH: has_key must be 0 or 1, got {has_key}")
    try:
        acks = Acks(acks)
    except ValueError:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, f"PUBLISH: acks level {acks} is not 0, 1 or 2"
        ) from None
    return Publish(topic, partition, acks, key if has_key else None, r.rest())


class PublishAck(NamedTuple):
    partition: int
    count: int
    base_offset: int


_PUBLISH_ACK = struct.Struct("<iIQ")


_PUBLISH_ACK_FRAME = struct.Struct(_HEADER.format + _PUBLISH_ACK.format[1:])


def encode_publish_ack(correlation_id: int, partition: int, count: int, base_offset: int) -> bytes:
    """PUBLISH_ACK: i32 partition, u32 count, u64 base_offset (offset of the batch's first record)."""
    return _PUBLISH_ACK_FRAME.pack(
        MAGIC,
        PROTOCOL_VERSION,
        Opcode.PUBLISH_ACK,
        0,
        0,
        correlation_id & 0xFFFFFFFF,
        _PUBLISH_ACK.size,
        partition,
        count,
        base_offset,
    )


def parse_publish_ack(frame: Frame) -> PublishAck:
    body = frame.body
    if frame.opcode == Opcode.PUBLISH_ACK and len(body) == _PUBLISH_ACK.size:  # the publisher's every ack
        return PublishAck(*_PUBLISH_ACK.unpack(body))
    return _parse_fixed(frame, Opcode.PUBLISH_ACK, _PUBLISH_ACK, PublishAck)  # names what is wrong


# ------------------------------------------------------------ fetch / push ----


class Fetch(NamedTuple):
    topic: str
    partition: int
    offset: int
    max_bytes: int
    max_wait_ms: int


_FETCH = struct.Struct("<iQII")


def encode_fetch(
    correlation_id: int,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int = 1 << 20,
    max_wait_ms: int = 0,
) -> bytes:
    """FETCH: str topic, i32 partition, u64 offset, u32 max_bytes, u32 max_wait_ms."""
    body = _str(topic, "topic") + _FETCH.pack(partition, offset, max_bytes, max_wait_ms)
    return encode_frame(Opcode.FETCH, correlation_id, body)


def parse_fetch(frame: Frame) -> Fetch:
    r = _Reader(frame, "FETCH")
    topic = r.string("topic")
    fields = r.take(_FETCH)
    r.done()
    return Fetch(topic, *fields)


class Records(NamedTuple):
    """The body of RECORDS (reply to FETCH) and DELIVER (pushed to a subscription)."""

    subscription: int  # 0 in RECORDS
    partition: int
    first_offset: int  # offset of the first record here (== next_offset when there are none)
    next_offset: int  # offset after the last record here: where to read next
    end_offset: int  # the log's next offset when this was sent (end_offset - next_offset = lag)
    records: memoryview  # whole records in the record format


_RECORDS = struct.Struct("<IiQQQ")
_RECORDS_HEADER = struct.Struct(_HEADER.format + _RECORDS.format[1:])  # frame header and fixed fields
#: Bytes of a RECORDS or DELIVER frame before its records (header + fixed fields; 8-aligned).
RECORDS_OVERHEAD = HEADER_SIZE + _RECORDS.size


def encode_records_header(
    opcode: int,
    correlation_id: int,
    subscription: int,
    partition: int,
    first_offset: int,
    next_offset: int,
    end_offset: int,
    records_length: int,
) -> bytes:
    """Header and fixed fields of a RECORDS/DELIVER frame; `records_length` bytes of records follow
    (so a broker can send them straight from a segment file)."""
    return _RECORDS_HEADER.pack(
        MAGIC,
        PROTOCOL_VERSION,
        opcode,
        0,
        0,
        correlation_id & 0xFFFFFFFF,
        _RECORDS.size + records_length,
        subscription,
        partition,
        first_offset,
        next_offset,
        end_offset,
    )


def encode_records(
    opcode: int,
    correlation_id: int,
    subscription: int,
    partition: int,
    first_offset: int,
    next_offset: int,
    end_offset: int,
    records: bytes | bytearray | memoryview = b"",
) -> bytes:
    """RECORDS/DELIVER: u32 subscription, i32 partition, u64 first_offset, u64 next_offset,
    u64 end_offset, then the records to the end of the body."""
    head = encode_records_header(
        opcode, correlation_id, subscription, partition, first_offset, next_offset, end_offset, len(records)
    )
    return head + bytes(records)


def parse_records(frame: Frame) -> Records:
    if frame.opcode not in (Opcode.RECORDS, Opcode.DELIVER):
        raise ProtocolError(
            ErrorCode.INVALID_FRAME,
            f"expected a RECORDS or DELIVER frame, got opcode {int(frame.opcode):#04x}",
        )
    body = frame.body
    if len(body) >= _RECORDS.size:  # (the reader below names a short body)
        return Records(*_RECORDS.unpack_from(body), memoryview(body)[_RECORDS.size :])
    r = _Reader(frame, Opcode(frame.opcode).name)
    fields = r.take(_RECORDS)
    return Records(*fields, r.rest())


class Subscribe(NamedTuple):
    topic: str
    partition: int
    offset: int  # an offset, or a Start value (negative)
    credit: int  # bytes the broker may push before it needs more CREDIT
    max_bytes: int  # the most record bytes in one DELIVER
    group: str  # "" or the group whose committed offset Start.COMMITTED means


_SUBSCRIBE = struct.Struct("<iqII")


def encode_subscribe(
    correlation_id: int,
    topic: str,
    partition: int,
    offset: int,
    credit: int,
    max_bytes: int = 256 * 1024,
    group: str = "",
) -> bytes:
    """SUBSCRIBE: str topic, i32 partition, i64 offset, u32 credit, u32 max_bytes, str group."""
    body = _str(topic, "topic") + _SUBSCRIBE.pack(partition, offset, credit, max_bytes) + _str(group, "group")
    return encode_frame(Opcode.SUBSCRIBE, correlation_id, body)


def parse_subscribe(frame: Frame) -> Subscribe:
    r = _Reader(frame, "SUBSCRIBE")
    topic = r.string("topic")
    fields = r.take(_SUBSCRIBE)
    group = r.string("group")
    r.done()
    return Subscribe(topic, *fields, group)


class Subscribed(NamedTuple):
    subscription: int  # the id DELIVER and CREDIT carry: the SUBSCRIBE's correlation id
    partition: int
    offset: int  # where the subscription starts
    end_offset: int


_SUBSCRIBED = struct.Struct("<IiQQ")


def encode_subscribed(
    correlation_id: int, subscription: int, partition: int, offset: int, end_offset: int
) -> bytes:
    """SUBSCRIBED: u32 subscription, i32 partition, u64 offset, u64 end_offset."""
    body = _SUBSCRIBED.pack(subscription, partition, offset, end_offset)
    return encode_frame(Opcode.SUBSCRIBED, correlation_id, body)


def parse_subscribed(frame: Frame) -> Subscribed:
    return _parse_fixed(frame, Opcode.SUBSCRIBED, _SUBSCRIBED, Subscribed)


class Credit(NamedTuple):
    subscription: int
    credit: int  # bytes added to the subscription's credit


_CREDIT = struct.Struct("<II")


def encode_credit(correlation_id: int, subscription: int, credit: int) -> bytes:
    """CREDIT: u32 subscription, u32 credit (bytes to add). The broker does not reply."""
    return encode_frame(Opcode.CREDIT, correlation_id, _CREDIT.pack(subscription, credit))


def parse_credit(frame: Frame) -> Credit:
    r = _Reader(frame, "CREDIT")
    c = Credit(*r.take(_CREDIT))
    r.done()
    return c


def encode_unsubscribe(correlation_id: int, subscription: int) -> bytes:
    """UNSUBSCRIBE: u32 subscription; the broker answers OK."""
    return encode_frame(Opcode.UNSUBSCRIBE, correlation_id, _U32.pack(subscription))


def parse_unsubscribe(frame: Frame) -> int:
    r = _Reader(frame, "UNSUBSCRIBE")
    (sub,) = r.take(_U32)
    r.done()
    return sub


# ---------------------------------------------------------- consumer groups ----


class Join(NamedTuple):
    group: str
    topic: str
    member_id: str  # "" to join as a new member
    session_timeout_ms: int
    strategy: Strategy


_JOIN = struct.Struct("<IB")


def encode_join(
    correlation_id: int,
    group: str,
    topic: str,
    member_id: str = "",
    session_timeout_ms: int = 10_000,
    strategy: int = Strategy.RANGE,
) -> bytes:
    """JOIN: str group, str topic, str member_id, u32 session_timeout_ms, u8 strategy."""
    body = (
        _str(group, "group")
        + _str(topic, "topic")
        + _str(member_id, "member_id")
        + _JOIN.pack(session_timeout_ms, strategy)
    )
    return encode_frame(Opcode.JOIN, correlation_id, body)


def parse_join(frame: Frame) -> Join:
    r = _Reader(frame, "JOIN")
    group = r.string("group")
    topic = r.string("topic")
    member = r.string("member_id")
    timeout, strategy = r.take(_JOIN)
    r.done()
    try:
        strategy = Strategy(strategy)
    except ValueError:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, f"JOIN: unknown assignment strategy {strategy}"
        ) from None
    return Join(group, topic, member, timeout, strategy)


class Assignment(NamedTuple):
    member_id: str
    generation: int
    session_timeout_ms: int
    heartbeat_interval_ms: int
    partitions: tuple[int, ...]


_ASSIGNMENT = struct.Struct("<IIIH")


def encode_assignment(correlation_id: int, a: Assignment) -> bytes:
    """ASSIGNMENT: str member_id, u32 generation, u32 session_timeout_ms, u32 heartbeat_interval_ms,
    u16 n, i32 partition × n."""
    body = (
        _str(a.member_id, "member_id")
        + _ASSIGNMENT.pack(a.generation, a.session_timeout_ms, a.heartbeat_interval_ms, len(a.partitions))
        + struct.pack(f"<{len(a.partitions)}i", *a.partitions)
    )
    return encode_frame(Opcode.ASSIGNMENT, correlation_id, body)


def parse_assignment(frame: Frame) -> Assignment:
    _expect(frame, Opcode.ASSIGNMENT)
    r = _Reader(frame, "ASSIGNMENT")
    member = r.string("member_id")
    gen, timeout, hb, n = r.take(_ASSIGNMENT)
    parts = r.take(struct.Struct(f"<{n}i"))
    r.done()
    return Assignment(member, gen, timeout, hb, tuple(parts))


class Heartbeat(NamedTuple):
    group: str
    member_id: str
    generation: int


def encode_heartbeat(correlation_id: int, group: str, member_id: str, generation: int) -> bytes:
    """HEARTBEAT: str group, str member_id, u32 generation. Reply HEARTBEAT_OK (or ERROR UNKNOWN_MEMBER)."""
    body = _str(group, "group") + _str(member_id, "member_id") + _U32.pack(generation)
    return encode_frame(Opcode.HEARTBEAT, correlation_id, body)


def parse_heartbeat(frame: Frame) -> Heartbeat:
    r = _Reader(frame, "HEARTBEAT")
    group = r.string("group")
    member = r.string("member_id")
    (gen,) = r.take(_U32)
    r.done()
    return Heartbeat(group, member, gen)


def encode_heartbeat_ok(correlation_id: int, generation: int) -> bytes:
    """HEARTBEAT_OK: u32 generation (the group's current one; re-JOIN when it differs from yours)."""
    return encode_frame(Opcode.HEARTBEAT_OK, correlation_id, _U32.pack(generation))


def parse_heartbeat_ok(frame: Frame) -> int:
    _expect(frame, Opcode.HEARTBEAT_OK)
    r = _Reader(frame, "HEARTBEAT_OK")
    (gen,) = r.take(_U32)
    r.done()
    return gen


class Leave(NamedTuple):
    group: str
    member_id: str


def encode_leave(correlation_id: int, group: str, member_id: str) -> bytes:
    """LEAVE: str group, str member_id. Reply OK."""
    return encode_frame(Opcode.LEAVE, correlation_id, _str(group, "group") + _str(member_id, "member_id"))


def parse_leave(frame: Frame) -> Leave:
    r = _Reader(frame, "LEAVE")
    group = r.string("group")
    member = r.string("member_id")
    r.done()
    return Leave(group, member)


class Rebalance(NamedTuple):
    group: str
    generation: int


def encode_rebalance(group: str, generation: int) -> bytes:
    """REBALANCE (pushed, correlation id 0): str group, u32 generation."""
    return encode_frame(Opcode.REBALANCE, 0, _str(group, "group") + _U32.pack(generation))


def parse_rebalance(frame: Frame) -> Rebalance:
    _expect(frame, Opcode.REBALANCE)
    r = _Reader(frame, "REBALANCE")
    group = r.string("group")
    (gen,) = r.take(_U32)
    r.done()
    return Rebalance(group, gen)


# ------------------------------------------------------------------ offsets ----


class Commit(NamedTuple):
    group: str
    topic: str
    member_id: str  # "" (with generation 0): a commit from outside any membership
    generation: int
    offsets: tuple[tuple[int, int], ...]  # (partition, next offset to consume)


_PART_OFFSET = struct.Struct("<iQ")


def encode_commit(
    correlation_id: int,
    group: str,
    topic: str,
    offsets: Mapping[int, int] | Iterable[tuple[int, int]],
    member_id: str = "",
    generation: int = 0,
) -> bytes:
    """COMMIT: str group, str topic, str member_id, u32 generation, u16 n, (i32 partition,
    u64 offset) × n. The offset is the next one to consume. Reply OK once durable."""
    items = list(offsets.items() if isinstance(offsets, Mapping) else offsets)
    body = bytearray(_str(group, "group") + _str(topic, "topic") + _str(member_id, "member_id"))
    body += _U32.pack(generation) + _U16.pack(len(items))
    for part, off in items:
        body += _PART_OFFSET.pack(part, off)
    return encode_frame(Opcode.COMMIT, correlation_id, body)


def parse_commit(frame: Frame) -> Commit:
    r = _Reader(frame, "COMMIT")
    group = r.string("group")
    topic = r.string("topic")
    member = r.string("member_id")
    (gen,) = r.take(_U32)
    (n,) = r.take(_U16)
    offsets = tuple(r.take(_PART_OFFSET) for _ in range(n))
    r.done()
    return Commit(group, topic, member, gen, offsets)


class OffsetsRequest(NamedTuple):
    group: str  # "" for none (committed is then -1)
    topic: str


def encode_offsets(correlation_id: int, topic: str, group: str = "") -> bytes:
    """OFFSETS: str group, str topic. Reply OFFSETS_RESULT for every partition of the topic."""
    return encode_frame(Opcode.OFFSETS, correlation_id, _str(group, "group") + _str(topic, "topic"))


def parse_offsets(frame: Frame) -> OffsetsRequest:
    r = _Reader(frame, "OFFSETS")
    group = r.string("group")
    topic = r.string("topic")
    r.done()
    return OffsetsRequest(group, topic)


class PartitionOffsets(NamedTuple):
    partition: int
    first_offset: int  # first retained record
    end_offset: int  # next offset to be written
    committed: int  # the group's committed offset, -1 when none
    last_timestamp_ns: int  # producer timestamp of the last record (0 when empty)

    @property
    def lag(self) -> int:
        """Records the group has not committed past (end - committed, or end - first)."""
        return self.end_offset - (self.committed if self.committed >= 0 else self.first_offset)


_OFFSETS_ITEM = struct.Struct("<iQQqq")


def encode_offsets_result(correlation_id: int, items: Iterable[PartitionOffsets]) -> bytes:
    """OFFSETS_RESULT: u16 n, then n × (i32 partition, u64 first, u64 end, i64 committed,
    i64 last_timestamp_ns)."""
    items = list(items)
    body = _U16.pack(len(items)) + b"".join(_OFFSETS_ITEM.pack(*i) for i in items)
    return encode_frame(Opcode.OFFSETS_RESULT, correlation_id, body)


def parse_offsets_result(frame: Frame) -> list[PartitionOffsets]:
    _expect(frame, Opcode.OFFSETS_RESULT)
    r = _Reader(frame, "OFFSETS_RESULT")
    (n,) = r.take(_U16)
    items = [PartitionOffsets(*r.take(_OFFSETS_ITEM)) for _ in range(n)]
    r.done()
    return items


class TimeOffset(NamedTuple):
    topic: str
    partition: int
    timestamp_ns: int


_TIME_OFFSET = struct.Struct("<iq")


def encode_time_offset(correlation_id: int, topic: str, partition: int, timestamp_ns: int) -> bytes:
    """TIME_OFFSET: str topic, i32 partition, i64 timestamp_ns. Reply TIME_OFFSET_RESULT."""
    return encode_frame(
        Opcode.TIME_OFFSET, correlation_id, _str(topic, "topic") + _TIME_OFFSET.pack(partition, timestamp_ns)
    )


def parse_time_offset(frame: Frame) -> TimeOffset:
    r = _Reader(frame, "TIME_OFFSET")
    topic = r.string("topic")
    part, ts = r.take(_TIME_OFFSET)
    r.done()
    return TimeOffset(topic, part, ts)


def encode_time_offset_result(correlation_id: int, partition: int, offset: int) -> bytes:
    """TIME_OFFSET_RESULT: i32 partition, u64 offset (first record with timestamp >= the one asked;
    the end offset when there is none)."""
    return encode_frame(Opcode.TIME_OFFSET_RESULT, correlation_id, _PART_OFFSET.pack(partition, offset))


def parse_time_offset_result(frame: Frame) -> tuple[int, int]:
    """(partition, offset)."""
    _expect(frame, Opcode.TIME_OFFSET_RESULT)
    r = _Reader(frame, "TIME_OFFSET_RESULT")
    part, off = r.take(_PART_OFFSET)
    r.done()
    return part, off


# -------------------------------------------------------------------- admin ----


class CreateTopic(NamedTuple):
    topic: str
    partitions: int  # 0: the broker's default


def encode_create_topic(correlation_id: int, topic: str, partitions: int = 0) -> bytes:
    """CREATE_TOPIC: str topic, u32 partitions (0: the broker's default). Reply INFO (the topic)."""
    return encode_frame(Opcode.CREATE_TOPIC, correlation_id, _str(topic, "topic") + _U32.pack(partitions))


def parse_create_topic(frame: Frame) -> CreateTopic:
    r = _Reader(frame, "CREATE_TOPIC")
    topic = r.string("topic")
    (n,) = r.take(_U32)
    r.done()
    return CreateTopic(topic, n)


def _encode_name(opcode: Opcode, field: str):  # -> encoder, parser of a body that is one string
    def encode(correlation_id: int, name: str) -> bytes:
        return encode_frame(opcode, correlation_id, _str(name, field))

    def parse(frame: Frame) -> str:
        r = _Reader(frame, opcode.name)
        name = r.string(field)
        r.done()
        return name

    encode.__doc__ = f"{opcode.name}: str {field}."
    parse.__doc__ = f"The {field} of a {opcode.name} frame."
    return encode, parse


encode_delete_topic, parse_delete_topic = _encode_name(Opcode.DELETE_TOPIC, "topic")
encode_describe_topic, parse_describe_topic = _encode_name(Opcode.DESCRIBE_TOPIC, "topic")
encode_describe_group, parse_describe_group = _encode_name(Opcode.DESCRIBE_GROUP, "group")


def encode_info(correlation_id: int, document: Mapping[str, Any]) -> bytes:
    """INFO: a UTF-8 JSON object (the admin replies; docs/PROTOCOL.md lists their keys)."""
    return encode_frame(Opcode.INFO, correlation_id, json.dumps(document, separators=(",", ":")).encode())


def parse_info(frame: Frame) -> dict[str, Any]:
    _expect(frame, Opcode.INFO)
    try:
        doc = json.loads(bytes(frame.body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(ErrorCode.INVALID_FRAME, f"INFO body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(ErrorCode.INVALID_FRAME, "INFO body is not a JSON object")
    return doc
