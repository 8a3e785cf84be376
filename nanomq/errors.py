"""NanoMQ's exceptions: one tree under NanoMQError, each also the matching builtin."""

import queue


class NanoMQError(Exception):
    """Base of every error NanoMQ raises."""


class PayloadTooLargeError(NanoMQError, ValueError):
    """A payload is longer than the limit that applies to it."""

    def __init__(self, size: int, limit: int, what: str = "payload") -> None:
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit
        self.what = what


class RingFullError(NanoMQError, queue.Full):
    """A blocking put timed out with the ring still full."""


class RingEmptyError(NanoMQError, queue.Empty):
    """A blocking get timed out with the ring still empty."""


class RingClosedError(NanoMQError, EOFError):
    """The ring is closed: this handle was closed, or the peer closed and the ring is drained."""


class PeerDeadError(NanoMQError, ConnectionError):
    """The process on the other side of the ring died (what it published was drained first)."""


class RingBusyError(NanoMQError, RuntimeError):
    """The role (producer or consumer) is held by another live handle."""


class RingStateError(NanoMQError, RuntimeError):
    """A call out of order: commit without reserve, release without peek, and the like."""


class RegionError(NanoMQError, OSError):
    """A shared-memory region is missing, not a ring, corrupt or of an unsupported layout."""


class CorruptRecordError(NanoMQError, ValueError):
    """A record failed validation (length, tag or checksum).

    `position` is the byte position of the bad record in the buffer checked, `offset` the
    offset it should have had (None when offsets were not checked), `reason` a short word
    (``"crc"``, ``"header"``, ``"short"``, ``"offset"``).
    """

    def __init__(
        self, message: str, *, position: int | None = None, offset: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.position = position
        self.offset = offset
        self.reason = reason


class LogCorruptError(NanoMQError, OSError):
    """Damage in a log that is not a torn tail: the records first_offset..last_offset (inclusive)
    of the segment file `path` are unreadable while records after them are valid."""

    def __init__(
        self, message: str, *, path: str = "", first_offset: int = -1, last_offset: int = -1
    ) -> None:
        super().__init__(message)
        self.path = path
        self.first_offset = first_offset
        self.last_offset = last_offset

    def __str__(self) -> str:
        return str(self.args[0])


class LogLockedError(NanoMQError, OSError):
    """The log directory is open for writing by another process (or another Log object)."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"log {path} is locked by {who}")
        self.path = path
        self.pid = pid

    def __str__(self) -> str:
        return str(self.args[0])


class LogFailedError(NanoMQError, OSError):
    """A sync of the log failed: it refuses appends from then on; records from
    durable_offset to next_offset were not made durable."""

    def __init__(self, message: str, *, durable_offset: int = -1, next_offset: int = -1) -> None:
        super().__init__(message)
        self.durable_offset = durable_offset
        self.next_offset = next_offset

    def __str__(self) -> str:
        return str(self.args[0])


class DiskFullError(NanoMQError, OSError):
    """No space left for a new segment (ENOSPC); nothing already appended is affected."""

    def __init__(self, message: str, err: int = 28) -> None:  # 28: ENOSPC
        super().__init__(message)
        self.errno = err

    def __str__(self) -> str:
        return str(self.args[0])


class LogClosedError(NanoMQError, ValueError):
    """An operation on a closed log."""


class OffsetOutOfRangeError(NanoMQError, LookupError):
    """An offset outside the log: before first_offset (deleted by retention) or past next_offset."""

    def __init__(self, offset: int, first_offset: int, next_offset: int) -> None:
        super().__init__(
            f"offset {offset} is outside the log: "
            f"first_offset is {first_offset}, next_offset is {next_offset}"
        )
        self.offset = offset
        self.first_offset = first_offset
        self.next_offset = next_offset


# ------------------------------------------------------------- the clients ----


class BrokerUnreachableError(NanoMQError, ConnectionError):
    """No connection to the broker could be made (the message names the address and the reason)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ConnectionLostError(NanoMQError, ConnectionError):
    """The connection to the broker broke; requests not yet answered may or may not have taken effect."""

    def __str__(self) -> str:
        return str(self.args[0])


class NotAuthorizedError(NanoMQError, PermissionError):
    """The broker refused the client: auth token missing or wrong."""

    def __str__(self) -> str:
        return str(self.args[0])


class TopicNotFoundError(NanoMQError, LookupError):
    """The topic (or partition) does not exist on the broker."""


class GroupNotFoundError(NanoMQError, LookupError):
    """The consumer group does not exist on the broker."""


class PublishTimeoutError(NanoMQError, TimeoutError):
    """A publish found no room under max_in_flight, or no ack came, before its timeout."""

    def __str__(self) -> str:
        return str(self.args[0])


class ClientClosedError(NanoMQError, RuntimeError):
    """A call on a Publisher or Subscriber that was closed."""


class BrokerError(NanoMQError, RuntimeError):
    """The broker answered a request with an error the client has no narrower type for.

    `code` is the protocol's error code (an int), `message` the broker's text.
    """

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class InvalidRequestError(BrokerError, ValueError):
    """The broker refused a value in a request (topic name, offset, partition count, corrupt batch)."""


class TopicExistsError(BrokerError):
    """CREATE_TOPIC for a topic that already exists."""


# ---------------------------------------------------------- the protocol ----


class ProtocolError(NanoMQError, ValueError):
    """A frame that breaks the wire protocol (docs/PROTOCOL.md).

    `code` is the protocol's ErrorCode (an int) the broker answers with; `correlation_id` the
    frame's, when its header could be read (0 otherwise).
    """

    def __init__(self, code: int, message: str, *, correlation_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.correlation_id = correlation_id

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidTopicNameError(NanoMQError, ValueError):
    """A topic name that is not [A-Za-z0-9._-]{1,249} or is "." / ".."; `reason` says which rule."""

    def __init__(self, name: object, reason: str) -> None:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60]) + "..."
        super().__init__(f"topic name {shown} is invalid: {reason}")
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


class CommitFailedError(NanoMQError, RuntimeError):
    """A group member's commit could not cover what it took: a rebalance gave the partition to
    another member first, which reads those messages again (at-least-once)."""
