"""The NanoMQ broker: `add_arguments(parser)` and `run(args)` back `nanomq broker`.

`Broker` (nanomq.broker.server) is the asyncio server; `run` builds its configuration from the
command line, picks the event loop (uvloop when importable), handles SIGINT/SIGTERM, and prints
one line `nanomq broker listening on HOST:PORT` on stdout once the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import platform
import signal
import sys
from pathlib import Path

from nanomq.broker.server import Broker, BrokerConfig
from nanomq.broker.storage import LogOptions
from nanomq.errors import LogCorruptError

__all__ = ["Broker", "BrokerConfig", "add_arguments", "config_from_args", "run"]

log = logging.getLogger(__name__)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0..65535, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the broker's options to `parser`."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: loopback only)"
    )
    parser.add_argument(
        "--port", type=_port, default=9000, help="TCP port (default 9000; 0 picks a free one)"
    )
    parser.add_argument(
        "--data-dir", default="./nanomq-data", help="where topics and offsets live (default ./nanomq-data)"
    )
    parser.add_argument(
        "--metrics-port", type=_port, help="serve Prometheus metrics at http://HOST:PORT/metrics"
    )
    parser.add_argument("--port-file", help="write the bound port to this file once listening (for --port 0)")
    parser.add_argument(
        "--auth-token-file", help="require clients to send the token in this file (whitespace stripped)"
    )
    parser.add_argument("--tls-cert", help="serve TLS (>= 1.2) with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    parser.add_argument(
        "--fsync",
        choices=("always", "interval", "never"),
        default="interval",
        help="log fsync policy: always (every publish is durable before its ack, whatever its acks level), "
        "interval (every --fsync-interval-ms; acks=all still waits for its own fsync), never (only acks=all "
        "publishes sync). Default interval",
    )
    parser.add_argument(
        "--fsync-interval-ms", type=_positive, default=100, help="for --fsync interval (default 100)"
    )
    parser.add_argument(
        "--segment-bytes", type=_positive, default=100 << 20, help="log segment size (default 100 MiB)"
    )
    parser.add_argument(
        "--retention-bytes", type=_positive, help="keep at most this many bytes per partition"
    )
    parser.add_argument("--retention-hours", type=float, help="delete segments older than this")
    parser.add_argument(
        "--accept-loss",
        action="store_true",
        help="start even when a partition's log holds damaged records with valid ones after them: skip "
        "those records (logged; recorded in the partition's accepted-loss file, so later starts skip them "
        "without this flag and still refuse new damage)",
    )
    parser.add_argument(
        "--default-partitions", type=_positive, default=1, help="partitions of a new topic (default 1)"
    )
    parser.add_argument(
        "--auto-create-topics", action="store_true", help="create unknown topics on first publish or join"
    )
    parser.add_argument("--max-connections", type=_positive, default=10_000, help="default 10000")
    parser.add_argument(
        "--max-frame-bytes", type=_positive, default=1 << 20, help="largest frame accepted (default 1 MiB)"
    )
    parser.add_argument("--max-batch", type=_positive, default=16384, help="most records in one PUBLISH")
    parser.add_argument(
        "--handshake-timeout", type=float, default=10.0, help="seconds to wait for HELLO (default 10)"
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=0.0, help="close silent connections after this (s)"
    )
    parser.add_argument(
        "--write-buffer-bytes",
        type=_positive,
        default=256 * 1024,
        help="per-connection output buffered before the broker stops reading and pushing (default 256 KiB)",
    )
    parser.add_argument(
        "--no-sendfile", action="store_true", help="copy records through Python instead of os.sendfile"
    )
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="event loop")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level (default WARNING)")


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    """The BrokerConfig the options describe (ValueError for an inconsistent set)."""
    token = None
    if args.auth_token_file:
        token = Path(args.auth_token_file).read_bytes().strip()
        if not token:
            raise ValueError(f"auth token file {args.auth_token_file} is empty")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.max_frame_bytes < 4096:
        raise ValueError(f"--max-frame-bytes {args.max_frame_bytes} is below the minimum of 4096")
    retention_ms = int(args.retention_hours * 3_600_000) if args.retention_hours is not None else None
    return BrokerConfig(
        data_dir=Path(args.data_dir),
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        auth_token=token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        log=LogOptions(
            segment_bytes=args.segment_bytes,
            fsync=args.fsync,
            fsync_interval_ms=args.fsync_interval_ms,
            retention_bytes=args.retention_bytes,
            retention_ms=retention_ms,
            accept_loss=args.accept_loss,
        ),
        default_partitions=args.default_partitions,
        auto_create_topics=args.auto_create_topics,
        max_connections=args.max_connections,
        max_frame=args.max_frame_bytes,
        max_batch=args.max_batch,
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        write_buffer_high=args.write_buffer_bytes,
        sendfile=not args.no_sendfile,
    )


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            if kind == "uvloop":
                raise
    return asyncio.new_event_loop()


async def _serve(config: BrokerConfig, port_file: str | None) -> None:
    broker = Broker(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, broker.request_stop)
    try:
        host, port = await broker.start()
    except BaseException:
        await broker.close()
        raise
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(f"{port}\n")
        tmp.rename(port_file)
    extra = ""
    if broker.metrics_address is not None:
        extra = f" (metrics on http://{broker.metrics_address[0]}:{broker.metrics_address[1]}/metrics)"
    print(f"nanomq broker listening on {host}:{port}{extra}", flush=True)
    await broker.wait_stopped()


_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_GLIBC_MMAP_THRESHOLD_MAX = 32 << 20  # mallopt refuses more on 64-bit


def keep_frame_memory(max_frame: int) -> bool:
    """Let glibc's malloc keep the memory of freed frames for the next ones; True when it took.

    Every PUBLISH body of up to `max_frame` bytes is allocated and freed once. Left to its
    dynamic thresholds, glibc serves such blocks with mmap or trims them back to the system
    on free, so each next frame faults its pages in again (and munmap shoots down TLBs on
    every CPU): about a quarter of the broker's CPU samples on the batched path (docs/ARCHITECTURE.md).
    Blocks up to twice the largest frame now come from the heap, and up to twice that
    stays mapped after a free. The broker is its own process, so this is its choice to
    make; the client library leaves its host process's malloc alone.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    mmap_at = min(_GLIBC_MMAP_THRESHOLD_MAX, max(4 << 20, 2 * max_frame))
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_at)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * mmap_at)
        )
    except (OSError, AttributeError):
        return False


def run(args: argparse.Namespace) -> int:
    """Run the broker until SIGINT/SIGTERM; returns the exit code."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"nanomq broker: {exc}", file=sys.stderr)
        return 2
    keep_frame_memory(config.max_frame)
    loop = _new_loop(args.loop)
    try:
        loop.run_until_complete(_serve(config, args.port_file))
    except LogCorruptError as exc:
        print(
            f"nanomq broker: cannot start: {exc}\nnanomq broker: to skip those records for good, start once "
            "with --accept-loss",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:
        print(f"nanomq broker: cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    return 0
