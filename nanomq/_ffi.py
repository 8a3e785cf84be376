"""The one seam to the generated C module: status codes become exceptions here."""

from typing import NoReturn

from nanomq import errors
from nanomq._native import ffi, lib

__all__ = ["check", "ffi", "last_error", "lib", "raise_status"]

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

_DEFAULT_TEXT = {
    lib.NMQ_ECORRUPT: "ring data is corrupt: a record failed validation",
    lib.NMQ_ECLOSED: "ring is closed",
    lib.NMQ_ESTATE: "call out of order",
    lib.NMQ_EINVAL: "invalid argument",
}


def last_error() -> str:
    """This thread's message from the last failed slow-path C call."""
    return ffi.string(lib.nmq_last_error()).decode("utf-8", "replace")


def raise_status(rc: int, context: str = "") -> NoReturn:
    """Raise the exception for a negative C status; `context` is used when C left no message."""
    cls = _STATUS.get(rc, errors.NanoMQError)
    raise cls(context or last_error() or _DEFAULT_TEXT.get(rc, f"C call failed with status {rc}"))


def check(rc: int) -> int:
    """Return rc when it is not negative; otherwise raise with the C message."""
    if rc < 0:
        raise_status(rc)
    return rc
