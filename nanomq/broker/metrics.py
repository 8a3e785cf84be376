"""Broker metrics in the Prometheus text exposition format, served at /metrics over HTTP."""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

# Seconds; publish-to-ack spans from tens of µs (acks=1) to tens of ms (fsync on a busy disk).
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Histogram:
    """A cumulative-bucket histogram of seconds."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def lines(self, name: str, labels: str = "") -> Iterable[str]:
        sep = "," if labels else ""
        total = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            yield f'{name}_bucket{{{labels}{sep}le="{le}"}} {total}'
        yield f"{name}_sum{{{labels}}} {self.sum}" if labels else f"{name}_sum {self.sum}"
        yield f"{name}_count{{{labels}}} {self.count}" if labels else f"{name}_count {self.count}"


class Metrics:
    """Counters the broker updates on its loop; `render()` adds the gauges it asks for."""

    def __init__(self) -> None:
        self.messages_in: defaultdict[str, int] = defaultdict(int)
        self.bytes_in: defaultdict[str, int] = defaultdict(int)
        self.messages_out: defaultdict[str, int] = defaultdict(int)
        self.bytes_out: defaultdict[str, int] = defaultdict(int)
        self.connections_total = 0
        self.protocol_errors = 0
        self.publish_latency: dict[str, Histogram] = {"0": Histogram(), "1": Histogram(), "2": Histogram()}
        self.fsync_latency = Histogram()

    def render(
        self,
        connections: int,
        lag: Iterable[tuple[str, str, int, int]],
        log_bytes: Iterable[tuple[str, int, int]],
    ) -> str:
        """The whole exposition; `lag` holds (group, topic, partition, lag) and `log_bytes`
        (topic, partition, bytes)."""
        out: list[str] = []

        def counter(name: str, help_: str, values: dict[str, int]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} counter")
            for topic, v in sorted(values.items()):
                out.append(f'{name}{{topic="{topic}"}} {v}')

        counter("nanomq_messages_in_total", "Records appended, per topic.", self.messages_in)
        counter("nanomq_bytes_in_total", "Record bytes appended, per topic.", self.bytes_in)
        counter("nanomq_messages_out_total", "Records sent to consumers, per topic.", self.messages_out)
        counter("nanomq_bytes_out_total", "Record bytes sent to consumers, per topic.", self.bytes_out)
        out += [
            "# HELP nanomq_connections Open client connections.",
            "# TYPE nanomq_connections gauge",
            f"nanomq_connections {connections}",
            "# HELP nanomq_connections_total Connections accepted since start.",
            "# TYPE nanomq_connections_total counter",
            f"nanomq_connections_total {self.connections_total}",
            "# HELP nanomq_protocol_errors_total Connections closed for an invalid frame.",
            "# TYPE nanomq_protocol_errors_total counter",
            f"nanomq_protocol_errors_total {self.protocol_errors}",
            "# HELP nanomq_consumer_lag Records between a group's committed offset and the end.",
            "# TYPE nanomq_consumer_lag gauge",
        ]
        for group, topic, part, lag_ in lag:
            out.append(f'nanomq_consumer_lag{{group="{group}",topic="{topic}",partition="{part}"}} {lag_}')
        out += [
            "# HELP nanomq_log_bytes Bytes of a partition's segment files.",
            "# TYPE nanomq_log_bytes gauge",
        ]
        for topic, part, n in log_bytes:
            out.append(f'nanomq_log_bytes{{topic="{topic}",partition="{part}"}} {n}')
        out += [
            "# HELP nanomq_publish_ack_seconds From a PUBLISH frame read to its ack written, per acks level.",
            "# TYPE nanomq_publish_ack_seconds histogram",
        ]
        for acks, h in self.publish_latency.items():
            if acks != "0":
                out.extend(h.lines("nanomq_publish_ack_seconds", f'acks="{acks}"'))
        out += [
            "# HELP nanomq_fsync_seconds Duration of one group-commit fdatasync round.",
            "# TYPE nanomq_fsync_seconds histogram",
        ]
        out.extend(self.fsync_latency.lines("nanomq_fsync_seconds"))
        return "\n".join(out) + "\n"


async def serve_metrics(host: str, port: int, render: Callable[[], str]) -> asyncio.Server:
    """An HTTP/1.0 server answering GET /metrics (404 otherwise); one request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body = render().encode()
                status, ctype = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found: try /metrics\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=16384)
