"""The one seam to the generated C module: status codes become exceptions here."""

from typing import NoReturn

from nanomq import errors
from nanomq._native import ffi, lib

__all__ = ["address", "ffi", "function_address", "last_error", "lib", "raise_status"]

_STATUS: dict[int, type[errors.NanoMQError]] = {
    lib.NMQ_TIMEOUT: errors.NanoMQError,
    lib.NMQ_EINVAL: errors.NanoMQError,
    lib.NMQ_ECORRUPT: errors.CorruptRecordError,
    lib.NMQ_EPEERDEAD: errors.PeerDeadError,
    lib.NMQ_ECLOSED: errors.RingClosedError,
    lib.NMQ_EBUSY: errors.RingBusyError,
    lib.NMQ_ESTATE: errors.RingStateError,
    lib.NMQ_ENOMEM: errors.NanoMQError,
    lib.NMQ_EVERSION: errors.RegionError,
    lib.NMQ_EMAGIC: errors.RegionError,
}

# Hot-path calls return these codes without writing a message (they never format
# one), so the thread's last message would be stale: they always get this text.
_HOT_PATH_TEXT = {
    lib.NMQ_ECORRUPT: "a record in the data area failed validation (length, tag or PAD)",
    lib.NMQ_ESTATE: "call out of order (a reservation or a peeked record is still open)",
    lib.NMQ_EINVAL: "invalid argument",
}


def address(cdata: object) -> int:
    """A cdata pointer as an int, for the CPython extensions that call the C core directly."""
    return int(ffi.cast("uintptr_t", cdata))


def function_address(name: str) -> int:
    """The address of the C core's function `name`, for those extensions."""
    return address(ffi.addressof(lib, name))


def last_error() -> str:
    """This thread's message from the last failed slow-path C call."""
    return ffi.string(lib.nmq_last_error()).decode("utf-8", "replace")


def raise_status(rc: int, context: str = "") -> NoReturn:
    """Raise the exception for a negative C status, its message prefixed with `context`."""
    cls = _STATUS.get(rc, errors.NanoMQError)
    text = _HOT_PATH_TEXT.get(rc) or last_error() or f"C call failed with status {rc}"
    raise cls(f"{context}: {text}" if context else text)
