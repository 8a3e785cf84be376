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
