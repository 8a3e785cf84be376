"""Small pieces every client shares: broker addresses, reconnect back-off, the Message type."""

from __future__ import annotations

import random
import time
from typing import NamedTuple

DEFAULT_PORT = 9000
"""The port `nanomq broker` listens on by default, and the one an address without a port means."""


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """`"host:port"`, `"host"`, `"[::1]:9000"` or `(host, port)` → `(host, port)`.

    Raises ValueError naming the address when the port is not a number in 1..65535.
    """
    if isinstance(address, tuple):
        host, port = address
    else:
        text = address.strip()
        if text.startswith("["):  # [IPv6]:port
            host, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:
            host, port_text = text, ""
        if not port_text:
            port = DEFAULT_PORT
        else:
            try:
                port = int(port_text)
            except ValueError:
                raise ValueError(f"broker address {address!r}: port {port_text!r} is not a number") from None
    if not 0 < int(port) < 65536:
        raise ValueError(f"broker address {address!r}: port {port} is outside 1..65535")
    return (host or "127.0.0.1"), int(port)


def format_address(host: str, port: int) -> str:
    """`(host, port)` → `"host:port"` (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Backoff:
    """Exponential back-off with full jitter between reconnect attempts.

    `next_delay()` grows from `initial` by `factor` up to `maximum` seconds; a random
    fraction of it is taken so many clients reconnecting after one broker restart spread out.
    """

    def __init__(self, initial: float = 0.02, maximum: float = 1.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._current = initial

    def next_delay(self) -> float:
        """The next delay in seconds (at least half the current step, at most the step)."""
        step = self._current
        self._current = min(self.maximum, self._current * self.factor)
        return step * (0.5 + random.random() / 2)

    def reset(self) -> None:
        """Back to the initial delay (after a successful connect)."""
        self._current = self.initial


class Deadline:
    """A point in monotonic time; `remaining()` is never negative, `None` means no deadline."""

    __slots__ = ("_end",)

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + max(0.0, timeout)

    def remaining(self) -> float | None:
        """Seconds left (0.0 once passed), or None without a deadline."""
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end


class Message(NamedTuple):
    """One message a Subscriber received.

    `timestamp` is the producer's time in nanoseconds since the Unix epoch; `key` is None
    when the message was published without one; `value` is the payload, decompressed.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
