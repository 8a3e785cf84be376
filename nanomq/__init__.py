"""NanoMQ: microsecond messaging for Python, and the harness that measures it."""

from typing import TYPE_CHECKING, Any

from nanomq.crc32c import crc32c
from nanomq.errors import (
    BrokerError,
    BrokerUnreachableError,
    ClientClosedError,
    CommitFailedError,
    ConnectionLostError,
    CorruptRecordError,
    DiskFullError,
    GroupNotFoundError,
    InvalidRequestError,
    InvalidTopicNameError,
    LogClosedError,
    LogCorruptError,
    LogFailedError,
    LogLockedError,
    NanoMQError,
    NotAuthorizedError,
    OffsetOutOfRangeError,
    PayloadTooLargeError,
    PeerDeadError,
    PublishTimeoutError,
    RegionError,
    RingBusyError,
    RingClosedError,
    RingEmptyError,
    RingFullError,
    RingStateError,
    TopicExistsError,
    TopicNotFoundError,
)
from nanomq.record import Record
from nanomq.ring import Ring, RingBatch, RingStats

if TYPE_CHECKING:
    from nanomq.client import Admin, Lag, Message, Publisher, Subscriber
    from nanomq.log import Log

# The broker's clients and the log are imported on first use: a program that only uses the
# ring does not pay for the protocol, ssl, threads and the log at import (≈ 100 ms here).
_LAZY = {
    "Admin": "nanomq.client",
    "Lag": "nanomq.client",
    "Message": "nanomq.client",
    "Publisher": "nanomq.client",
    "Subscriber": "nanomq.client",
    "Log": "nanomq.log",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nanomq' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Admin",
    "BrokerError",
    "BrokerUnreachableError",
    "ClientClosedError",
    "CommitFailedError",
    "ConnectionLostError",
    "CorruptRecordError",
    "DiskFullError",
    "GroupNotFoundError",
    "InvalidRequestError",
    "InvalidTopicNameError",
    "Lag",
    "Log",
    "LogClosedError",
    "LogCorruptError",
    "LogFailedError",
    "LogLockedError",
    "Message",
    "NanoMQError",
    "NotAuthorizedError",
    "OffsetOutOfRangeError",
    "PayloadTooLargeError",
    "PeerDeadError",
    "PublishTimeoutError",
    "Publisher",
    "Record",
    "RegionError",
    "Ring",
    "RingBatch",
    "RingBusyError",
    "RingClosedError",
    "RingEmptyError",
    "RingFullError",
    "RingStateError",
    "RingStats",
    "Subscriber",
    "TopicExistsError",
    "TopicNotFoundError",
    "__version__",
    "crc32c",
]
