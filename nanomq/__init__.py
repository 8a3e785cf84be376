"""NanoMQ: microsecond messaging for Python, and the harness that measures it."""

from nanomq.crc32c import crc32c
from nanomq.errors import (
    CorruptRecordError,
    NanoMQError,
    PayloadTooLargeError,
    PeerDeadError,
    RegionError,
    RingBusyError,
    RingClosedError,
    RingEmptyError,
    RingFullError,
    RingStateError,
)
from nanomq.ring import Ring, RingBatch, RingStats

__version__ = "0.1.0"

__all__ = [
    "CorruptRecordError",
    "NanoMQError",
    "PayloadTooLargeError",
    "PeerDeadError",
    "RegionError",
    "Ring",
    "RingBatch",
    "RingBusyError",
    "RingClosedError",
    "RingEmptyError",
    "RingFullError",
    "RingStateError",
    "RingStats",
    "__version__",
    "crc32c",
]
