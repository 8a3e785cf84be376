"""Helpers for broker tests: start `nanomq broker` as a real subprocess, and a tiny raw client.

`BrokerProcess` starts `python -m nanomq broker --port 0 --data-dir DIR` and learns the bound
port from the one line the broker prints when it is ready (no sleeps, no polling). `RawClient`
speaks the protocol over a blocking socket with nanomq.protocol only, so broker tests do not
depend on nanomq.client.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nanomq import protocol as P
from nanomq import record

READY = re.compile(r"nanomq broker listening on (\S+):(\d+)")


class BrokerProcess:
    """A `nanomq broker` subprocess on an ephemeral port of 127.0.0.1."""

    def __init__(self, data_dir: Path | str, *args: str, start_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.metrics_port: int | None = None
        self.start()

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "nanomq",
            "broker",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            m = READY.search(line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                mm = re.search(r"http://[^:]+:(\d+)/metrics", line)
                self.metrics_port = int(mm.group(1)) if mm else None
                return
        err = self.stop(signal.SIGKILL)
        raise RuntimeError(f"broker did not start (stdout {line!r}); stderr:\n{err}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
        """Signal the broker, wait for it, return its stderr."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err or ""

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BrokerErrorReply(Exception):
    """An ERROR frame, as an exception (tests check .code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{P.ErrorCode(code).name if code in P.ErrorCode else code}: {message}")
        self.code = code
        self.message = message


class RawClient:
    """A blocking protocol client for tests: send frames, read frames, request/reply."""

    def __init__(
        self,
        address: tuple[str, int] | str,
        *,
        hello: bool = True,
        token: bytes | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        client_id: str = "test",
    ) -> None:
        if isinstance(address, str):
            host, _, port = address.rpartition(":")
            address = (host, int(port))
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock: socket.socket = tls.wrap_socket(sock, server_hostname=address[0]) if tls else sock
        except BaseException:
            sock.close()
            raise
        self.decoder = P.FrameDecoder(max_frame=64 << 20)
        self.frames: list[P.Frame] = []
        self.pushed: list[P.Frame] = []
        self._corr = 0
        self.welcome: P.Welcome | None = None
        if hello:
            try:
                self.welcome = P.parse_welcome(self.request(lambda c: P.encode_hello(c, client_id, token)))
            except BaseException:
                self.close()
                raise

    def next_corr(self) -> int:
        self._corr += 1
        return self._corr

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self, timeout: float | None = 10.0) -> P.Frame:
        """The next frame (ConnectionError at EOF, TimeoutError when none comes)."""
        self.sock.settimeout(timeout)
        while not self.frames:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    def reply(self, corr: int, timeout: float = 10.0) -> P.Frame:
        """The frame answering `corr` (pushed frames seen meanwhile are kept in .pushed)."""
        while True:
            f = self.recv_frame(timeout)
            if f.correlation_id == corr and f.opcode not in (P.Opcode.DELIVER, P.Opcode.REBALANCE):
                if f.opcode == P.Opcode.ERROR:
                    e = P.parse_error(f)
                    raise BrokerErrorReply(e.code, e.message)
                return f
            self.pushed.append(f)

    def request(self, build: Any, timeout: float = 10.0) -> P.Frame:
        corr = self.next_corr()
        self.send(build(corr))
        return self.reply(corr, timeout)

    def expect_closed(self, timeout: float = 10.0) -> list[P.Frame]:
        """Read until the broker closes; returns the frames seen (an ERROR is usually last)."""
        seen = []
        try:
            while True:
                seen.append(self.recv_frame(timeout))
        except (ConnectionError, OSError):
            pass
        return seen

    # ---- conveniences ----

    def create_topic(self, name: str, partitions: int = 1) -> dict[str, Any]:
        return P.parse_info(self.request(lambda c: P.encode_create_topic(c, name, partitions)))

    def publish(
        self,
        topic: str,
        values: list[bytes],
        *,
        partition: int = 0,
        acks: int = P.Acks.LEADER,
        keys: list[bytes | None] | None = None,
        key: bytes | None = None,
        codec: record.Codec = record.Codec.NONE,
    ) -> P.PublishAck | None:
        batch = record.encode_batch(values, keys, codec=codec)
        if acks == P.Acks.NONE:
            self.send(P.encode_publish(self.next_corr(), topic, partition, acks, batch, key=key))
            return None
        return P.parse_publish_ack(
            self.request(lambda c: P.encode_publish(c, topic, partition, acks, batch, key=key))
        )

    def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int = 1 << 20, max_wait_ms: int = 0
    ) -> P.Records:
        return P.parse_records(
            self.request(lambda c: P.encode_fetch(c, topic, partition, offset, max_bytes, max_wait_ms))
        )

    def fetch_all(self, topic: str, partition: int, offset: int = 0) -> list[record.Record]:
        out: list[record.Record] = []
        while True:
            r = self.fetch(topic, partition, offset)
            if r.first_offset == r.next_offset:
                return out
            out.extend(record.decode_batch(bytes(r.records)))
            offset = r.next_offset

    def offsets(self, topic: str, group: str = "") -> list[P.PartitionOffsets]:
        return P.parse_offsets_result(self.request(lambda c: P.encode_offsets(c, topic, group)))

    def ping(self) -> None:
        P.parse_empty(self.request(P.encode_ping), P.Opcode.PONG)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_loop(
    address: str, topic: str, prefix: str, first_seq: int, partitions: int, window: int = 8
) -> None:
    """Publish numbered batches with acks=all, up to `window` in flight, forever; print one line
    `ack PARTITION BASE COUNT FIRST_SEQ` per ack (flushed). Ends when the connection breaks."""
    import random as _random

    rnd = _random.Random(first_seq)
    seq = first_seq
    pending: dict[int, tuple[int, int]] = {}
    with RawClient(address, client_id=prefix) as c:
        while True:
            while len(pending) < window:
                n = rnd.randint(1, 20)
                values = [f"{prefix}-{seq + i}".encode() for i in range(n)]
                corr = c.next_corr()
                c.send(
                    P.encode_publish(
                        corr, topic, rnd.randrange(partitions), P.Acks.ALL, record.encode_batch(values)
                    )
                )
                pending[corr] = (seq, n)
                seq += n
            f = c.recv_frame(timeout=60)
            if f.opcode == P.Opcode.ERROR:
                raise SystemExit(f"error: {P.parse_error(f)}")
            ack = P.parse_publish_ack(f)
            first, n = pending.pop(f.correlation_id)
            assert ack.count == n
            sys.stdout.write(f"ack {ack.partition} {ack.base_offset} {n} {first}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        try:
            publish_loop(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
        except (ConnectionError, OSError, TimeoutError):
            pass
