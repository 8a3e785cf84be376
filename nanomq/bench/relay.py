"""The floor of a two-hop path on this machine: a relay that forwards bytes and parses nothing.

`nanomq bench broker` runs it beside the brokers in its latency sections, as context: a
producer's bytes go to a Python process (asyncio, with uvloop when it is installed, as the
broker) and on to a consumer, over loopback TCP with TCP_NODELAY, by the same load
generator — the wake-ups, system calls and scheduling that every broker on this machine
pays before it does any work. No broker with a Python process in the middle gets below it.

Wire: each side sends one byte first — b"S" (subscriber; the relay answers b"K" once it
forwards to it) or b"P" (publisher) — then a publisher sends messages as a u32 little-endian
length and the bytes, and the relay writes whatever a publisher sends to every subscriber,
as it arrives. `python -m nanomq.bench.relay PORT` serves on 127.0.0.1:PORT until killed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Any

from nanomq.bench.drivers import Consumer, Producer
from nanomq.bench.peers_server import START_TIMEOUT_S, ServerDriver

__all__ = ["RelayDriver", "serve"]

_LEN = struct.Struct("<I")


def serve(port: int) -> None:
    """Relay on 127.0.0.1:`port` until the process is killed."""
    subscribers: set[asyncio.Transport] = set()

    class Side(asyncio.Protocol):
        def __init__(self) -> None:
            self.role = b""
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            if not self.role:
                self.role, data = data[:1], data[1:]
                if self.role == b"S":
                    subscribers.add(self.transport)
                    self.transport.write(b"K")
            if self.role == b"P" and data:
                for sub in subscribers:
                    sub.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            subscribers.discard(self.transport)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Side, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


class _RelayProducer(Producer):
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        self.sock.sendall(b"P")

    def send(self, data: bytes) -> None:
        self.sock.sendall(_LEN.pack(len(data)) + data)

    def send_batch(self, records: list[bytes]) -> None:
        self.sock.sendall(b"".join(_LEN.pack(len(r)) + r for r in records))

    def close(self) -> None:
        self.sock.close()


class _RelayConsumer(Consumer):
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"S")
        if self.sock.recv(1) != b"K":  # registered: nothing the producer sends is missed
            raise RuntimeError("the relay did not take the subscriber")
        self.sock.settimeout(None)
        self.buf = bytearray()

    def recv(self) -> bytes:
        buf = self.buf
        while True:
            if len(buf) >= 4:
                (n,) = _LEN.unpack_from(buf)
                if len(buf) >= 4 + n:
                    msg = bytes(buf[4 : 4 + n])
                    del buf[: 4 + n]
                    return msg
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the relay closed the connection")
            buf += data

    def recv_batch(self) -> list[bytes]:
        out = [self.recv()]
        while len(self.buf) >= 4 and len(self.buf) >= 4 + _LEN.unpack_from(self.buf)[0] and len(out) < 256:
            out.append(self.recv())
        return out

    def close(self) -> None:
        self.sock.close()


class RelayDriver(ServerDriver):
    """A relay process that forwards a producer's bytes to a consumer unparsed (see the module)."""

    name = "relay"
    label = "floor: a relay that parses nothing (asyncio/uvloop, raw sockets)"
    batch_label = "length-prefixed records in one send"

    def __init__(self) -> None:
        super().__init__()
        self.port: int | None = None

    def setup(self, ctx: Any, size: int) -> None:
        try:
            self.port = self.start_on_free_port(
                lambda port: [sys.executable, "-m", "nanomq.bench.relay", str(port)], "relay"
            )
        except BaseException:
            self.teardown()
            raise

    def producer(self) -> Producer:
        assert self.port is not None, "setup() was not called"
        return _RelayProducer(self.port)

    def consumer(self) -> Consumer:
        assert self.port is not None, "setup() was not called"
        return _RelayConsumer(self.port)

    def params(self) -> dict[str, Any]:
        return {"driver": self.name}


if __name__ == "__main__":
    serve(int(sys.argv[1]))
