"""Turning socket failures and the broker's ERROR frames into NanoMQ's typed exceptions."""

from __future__ import annotations

import socket
import ssl

from nanomq import protocol as P
from nanomq.errors import (
    BrokerError,
    BrokerUnreachableError,
    GroupNotFoundError,
    InvalidRequestError,
    NanoMQError,
    NotAuthorizedError,
    PayloadTooLargeError,
    TopicExistsError,
    TopicNotFoundError,
)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def unreachable(address: str, exc: BaseException, what: str | None = None) -> BrokerUnreachableError:
    """`broker not reachable at 127.0.0.1:9000: connection refused` (or `...: what: reason`)."""
    detail = f"{what}: {_reason(exc)}" if what else _reason(exc)
    return BrokerUnreachableError(f"broker not reachable at {address}: {detail}")


def error_from_frame(frame: P.Frame) -> NanoMQError | None:
    """The exception an ERROR frame stands for, or None when `frame` is not an error."""
    if frame.opcode != P.Opcode.ERROR:
        return None
    err = P.parse_error(frame)
    return error_from_code(err.code, err.message)


_E = P.ErrorCode
_INVALID = frozenset(
    {_E.INVALID_TOPIC, _E.INVALID_REQUEST, _E.OFFSET_OUT_OF_RANGE, _E.CORRUPT_BATCH, _E.INVALID_FRAME}
)
_TOO_LARGE = frozenset({_E.MESSAGE_TOO_LARGE, _E.BATCH_TOO_LARGE, _E.FRAME_TOO_LARGE})


def error_from_code(code: int, message: str) -> NanoMQError:
    """The typed exception for a protocol error code (BrokerError when there is no narrower one).

    Every exception made here has `code` (the ErrorCode) set.
    """
    exc: NanoMQError
    if code == _E.NOT_AUTHORIZED:
        exc = NotAuthorizedError(f"not authorized: {message}")
    elif code in (_E.UNKNOWN_TOPIC, _E.UNKNOWN_PARTITION):
        exc = TopicNotFoundError(message)
    elif code == _E.UNKNOWN_GROUP:
        exc = GroupNotFoundError(message)
    elif code == _E.TOPIC_EXISTS:
        exc = TopicExistsError(message, int(code))
    elif code in _TOO_LARGE:
        exc = PayloadTooLargeError.__new__(PayloadTooLargeError)
        Exception.__init__(exc, message)  # the broker's text names the size and the limit
        exc.size = exc.limit = -1
        exc.what = "message"
    elif code in _INVALID:
        exc = InvalidRequestError(message, int(code))
    else:
        exc = BrokerError(message, int(code))
    exc.code = code  # type: ignore[attr-defined]
    return exc
