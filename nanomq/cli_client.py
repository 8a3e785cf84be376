"""The broker-facing commands of `nanomq`: broker, publish, subscribe, topics, groups, stats."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_NOT_AUTHORIZED = 5
EXIT_INVALID = 6
EXIT_TIMEOUT = 7
EXIT_INTERRUPTED = 130

EXIT_CODES_EPILOG = """\
exit codes:
  0    success
  1    the broker refused or failed the request (message on stderr)
  2    usage error (bad or missing arguments)
  3    broker not reachable, or the connection to it was lost
  4    topic or group not found
  5    not authorized (missing or wrong auth token)
  6    invalid input: topic name invalid, message too large, bad offset
  7    timed out (back-pressure, or --timeout passed before --count messages)
  130  interrupted (Ctrl-C)

The broker address comes from --broker, else $NANOMQ_ADDRESS, else 127.0.0.1:9000.
"""

DEFAULT_ADDRESS = "127.0.0.1:9000"


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the broker-facing subcommands to the `nanomq` parser."""
    p = sub.add_parser(
        "broker",
        help="run a NanoMQ broker",
        description="Run a NanoMQ broker: topics and partitions over write-ahead logs, served over TCP.",
    )
    from nanomq import broker

    broker.add_arguments(p)
    p.set_defaults(func=broker.run)

    _add_publish(sub)
    _add_subscribe(sub)
    _add_topics(sub)
    _add_groups(sub)
    _add_stats(sub)


# ------------------------------------------------------------ shared options ----


def _parser(
    sub: argparse._SubParsersAction, name: str, help: str, description: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--broker",
        "-b",
        metavar="HOST:PORT",
        default=None,
        help=f"broker address (default $NANOMQ_ADDRESS or {DEFAULT_ADDRESS})",
    )
    g.add_argument("--auth-token", metavar="TOKEN", help="auth token sent in the handshake")
    g.add_argument(
        "--auth-token-file", metavar="FILE", help="read the auth token from FILE (first line, stripped)"
    )
    g.add_argument("--tls", action="store_true", help="connect with TLS (verifying the broker's certificate)")
    g.add_argument(
        "--tls-ca", metavar="FILE", help="CA certificate (PEM) to verify the broker with; implies --tls"
    )
    g.add_argument("--client-id", metavar="ID", help="client id the broker logs (default nanomq-cli-<pid>)")


def _connection_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    import ssl

    token = args.auth_token
    if args.auth_token_file:
        with open(args.auth_token_file, encoding="utf-8") as f:
            token = f.readline().strip()
    tls: Any = None
    if args.tls_ca:
        tls = ssl.create_default_context(cafile=args.tls_ca)
    elif args.tls:
        tls = True
    return {
        "address": args.broker or os.environ.get("NANOMQ_ADDRESS") or DEFAULT_ADDRESS,
        "auth_token": token,
        "tls": tls,
        "client_id": args.client_id or f"nanomq-cli-{os.getpid()}",
    }


def _run(command: str, body: Callable[[], int]) -> int:
    """Run a command body, turning NanoMQ's exceptions into one stderr line and an exit code."""
    from nanomq import errors

    try:
        return body()
    except KeyboardInterrupt:
        print(f"nanomq {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `nanomq subscribe ... | head`: the reader went away
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except OSError as exc:
        if isinstance(exc, errors.NanoMQError):
            print(f"nanomq {command}: {exc}", file=sys.stderr)
            return _exit_code(exc)
        print(
            f"nanomq {command}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
            file=sys.stderr,
        )
        return EXIT_ERROR
    except errors.NanoMQError as exc:
        print(f"nanomq {command}: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except ValueError as exc:
        print(f"nanomq {command}: {exc}", file=sys.stderr)
        return EXIT_INVALID


def _exit_code(exc: BaseException) -> int:
    from nanomq import errors

    if isinstance(exc, errors.BrokerUnreachableError | errors.ConnectionLostError):
        return EXIT_UNREACHABLE
    if isinstance(exc, errors.NotAuthorizedError):
        return EXIT_NOT_AUTHORIZED
    if isinstance(exc, errors.TopicNotFoundError | errors.GroupNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, ValueError):
        return EXIT_INVALID
    return EXIT_ERROR


def _acks(text: str) -> int | str:
    if text in ("0", "1"):
        return int(text)
    if text in ("all", "-1"):
        return "all"
    raise argparse.ArgumentTypeError(f"acks must be 0, 1 or all, not {text!r}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


# ------------------------------------------------------------------- publish ----


def _add_publish(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "publish",
        "publish messages to a topic",
        "Publish to a topic: one --message, the lines of --file, the lines of stdin (when neither is "
        "given), or generated messages in load mode (--count N --size B [--rate R]), which ends with a "
        "timing summary (msg/s and P50/P99/P99.9 publish-to-ack latency).",
    )
    p.add_argument("--topic", "-t", required=True, help="topic to publish to")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--message", "-m", help="publish this one message (UTF-8)")
    src.add_argument("--file", "-f", metavar="FILE", help="publish each line of FILE as a message")
    p.add_argument("--key", "-k", help="message key (UTF-8): messages with one key go to one partition")
    p.add_argument(
        "--partition", type=_non_negative, help="publish to this partition (default: by key, or spread)"
    )
    p.add_argument("--acks", type=_acks, default=1, help="0 (no ack), 1 (appended, default) or all (fsynced)")
    p.add_argument("--compression", choices=("none", "zstd", "lz4"), default="none", help="per-record codec")
    load = p.add_argument_group("load mode")
    load.add_argument(
        "--count", "-n", type=_positive, help="publish N generated messages and print a summary"
    )
    load.add_argument(
        "--size", type=_non_negative, default=64, help="payload bytes in load mode (default 64)"
    )
    load.add_argument(
        "--rate", type=_positive, help="messages per second in load mode (default: as fast as acked)"
    )
    load.add_argument(
        "--batch", type=_positive, default=1, help="messages per publish frame in load mode (default 1)"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for acknowledgements (default 30)"
    )
    p.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing on success (offsets go to stdout otherwise)"
    )
    _add_connection_options(p)
    p.set_defaults(func=lambda a: _run("publish", lambda: _publish(a)))


def _publish(args: argparse.Namespace) -> int:
    from nanomq.client import Publisher
    from nanomq.protocol import validate_topic_name

    validate_topic_name(args.topic)
    key = args.key.encode() if args.key is not None else None
    compression = None if args.compression == "none" else args.compression
    if args.count is not None and (args.message is not None or args.file is not None):
        print(
            "nanomq publish: --count (load mode) cannot be combined with --message or --file", file=sys.stderr
        )
        return EXIT_USAGE
    with Publisher(**_connection_kwargs(args), acks=args.acks, compression=compression) as pub:
        if args.count is not None:
            return _publish_load(pub, args, key)
        if args.message is not None:
            lines: Iterator[bytes] = iter([args.message.encode()])
        elif args.file is not None:
            lines = _lines(open(args.file, "rb"))
        else:
            lines = _lines(sys.stdin.buffer)
        count = 0
        for value in lines:
            offset = pub.publish(args.topic, value, key=key, partition=args.partition, timeout=args.timeout)
            count += 1
            if not args.quiet and offset is not None:
                print(offset, flush=True)
        remaining = pub.flush(args.timeout)
        if remaining:
            print(
                f"nanomq publish: {remaining} messages not acknowledged within {args.timeout} s",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        if not args.quiet:
            print(f"published {count} message{'s' if count != 1 else ''} to {args.topic}", file=sys.stderr)
    return EXIT_OK


def _lines(f: Any) -> Iterator[bytes]:
    with f:
        for line in f:
            yield line.rstrip(b"\r\n")


def _publish_load(pub: Any, args: argparse.Namespace, key: bytes | None) -> int:
    """Load mode: open loop at --rate (latency from the intended send time) or closed loop."""
    import array
    import threading

    from nanomq.bench import hdr
    from nanomq.bench.loadgen import wait_until

    n, size, batch = args.count, args.size, args.batch
    sys.setswitchinterval(1e-4)  # this thread publishes flat out: let the I/O thread in promptly
    payload = (b"nanomq-" * (size // 7 + 1))[:size]
    latencies = array.array("q", bytes(8 * ((n + batch - 1) // batch)))
    acked = [0]
    errors: list[BaseException] = []
    lock = threading.Lock()
    interval_ns = int(1e9 * batch / args.rate) if args.rate else 0
    start = time.perf_counter_ns()
    intended = start
    for i in range(0, n, batch):
        k = min(batch, n - i)
        if interval_ns:
            intended = start + (i // batch) * interval_ns
            # sleeps, then spins in C without the GIL (the I/O thread reads acks meanwhile; a
            # Python spin would keep it for the switch interval, and sleep(0) oversleeps ≈ 100 µs)
            wait_until(intended, True)
        sent_at = intended if interval_ns else time.perf_counter_ns()
        slot = i // batch

        def done(fut: Any, slot: int = slot, sent_at: int = sent_at, k: int = k) -> None:
            latencies[slot] = time.perf_counter_ns() - sent_at
            exc = fut.exception()
            with lock:
                if exc is not None:
                    errors.append(exc)
                else:
                    acked[0] += k

        if k == 1 and batch == 1:
            fut = pub.publish_async(
                args.topic, payload, key=key, partition=args.partition, timeout=args.timeout
            )
        else:
            fut = pub.publish_batch_async(
                args.topic,
                [payload] * k,
                keys=None if key is None else [key] * k,
                partition=args.partition,
                timeout=args.timeout,
            )
        fut.add_done_callback(done)
        if errors:
            raise errors[0]
    remaining = pub.flush(args.timeout)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    if errors:
        raise errors[0]
    if remaining:
        print(
            f"nanomq publish: {remaining} messages not acknowledged within {args.timeout} s", file=sys.stderr
        )
        return EXIT_TIMEOUT
    rate = n / elapsed if elapsed > 0 else float("inf")
    ack = "acks=0: no acknowledgements to time" if args.acks == 0 else None
    if ack is None:
        h, _ = hdr.histogram_from_values(latencies)
        pct = hdr.percentiles(h)
        what = "per batch " if batch > 1 else ""
        origin = "intended send time" if interval_ns else "send"
        ack = (
            f"ack latency {what}(from {origin}): P50 {pct['p50'] / 1e3:.0f} µs, "
            f"P99 {pct['p99'] / 1e3:.0f} µs, "
            f"P99.9 {pct['p99.9'] / 1e3:.0f} µs, max {pct['max'] / 1e3:.0f} µs"
        )
    print(f"published {n} messages of {size} bytes to {args.topic} in {elapsed:.3f} s: {rate:,.0f} msg/s")
    print(ack)
    return EXIT_OK


# ----------------------------------------------------------------- subscribe ----


def _add_subscribe(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "subscribe",
        "print the messages of a topic as they arrive",
        "Subscribe to a topic and print one line per message with its end-to-end latency (now minus "
        "the producer's timestamp). --format json prints machine-readable lines: topic, partition, offset, "
        "timestamp (ns), key, value, latency_us (key and value as UTF-8 text, or key_base64/value_base64).",
    )
    p.add_argument("--topic", "-t", required=True, help="topic to read")
    p.add_argument("--group", "-g", help="join this consumer group (partitions shared, offsets committed)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the earliest message")
    start.add_argument("--offset", type=_non_negative, help="start at this offset (in every partition)")
    p.add_argument("--count", "-n", type=_positive, help="exit after N messages")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    p.add_argument(
        "--timeout", type=float, help="exit (code 7) when no message arrives for this many seconds"
    )
    _add_connection_options(p)
    p.set_defaults(func=lambda a: _run("subscribe", lambda: _subscribe(a)))


def _subscribe(args: argparse.Namespace) -> int:
    from nanomq.protocol import validate_topic_name

    validate_topic_name(args.topic)
    if args.from_beginning:
        start: Any = "earliest"
    elif args.offset is not None:
        start = args.offset
    else:
        start = "latest"
    out = sys.stdout
    seen = 0
    sub = _subscriber_when_topic_exists(args, start)
    with sub:
        idle_since = time.monotonic()
        while args.count is None or seen < args.count:
            msgs = sub.poll_batch(
                max_messages=256 if args.count is None else min(256, args.count - seen), timeout=0.2
            )
            now = time.time_ns()
            if not msgs:
                if args.timeout is not None and time.monotonic() - idle_since >= args.timeout:
                    print(
                        f"nanomq subscribe: no message for {args.timeout} s ({seen} received)",
                        file=sys.stderr,
                    )
                    return EXIT_TIMEOUT
                continue
            idle_since = time.monotonic()
            for msg in msgs:
                _print_message(out, msg, now, args.format)
            out.flush()
            seen += len(msgs)
        sub.commit()
    return EXIT_OK


def _subscriber_when_topic_exists(args: argparse.Namespace, start: Any) -> Any:
    """A Subscriber; a topic that does not exist yet is waited for (the quickstart starts the
    subscriber before the first publish creates the topic), up to --timeout when given."""
    from nanomq.client import Subscriber
    from nanomq.errors import TopicNotFoundError

    waited = time.monotonic()
    told = False
    while True:
        try:
            return Subscriber(
                **_connection_kwargs(args), topic=args.topic, group=args.group, start=start, auto_commit=True
            )
        except TopicNotFoundError:
            if args.timeout is not None and time.monotonic() - waited >= args.timeout:
                raise
            if not told:
                print(f"nanomq subscribe: waiting for topic {args.topic!r} to be created", file=sys.stderr)
                told = True
            time.sleep(0.2)


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _print_message(out: TextIO, msg: Any, now_ns: int, fmt: str) -> None:
    latency_us = (now_ns - msg.timestamp) / 1e3
    if fmt == "json":
        line: dict[str, Any] = {
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "timestamp": msg.timestamp,
        }
        for name, data in (("key", msg.key), ("value", msg.value)):
            text = _text(data)
            if data is None or text is not None:
                line[name] = text
            else:
                line[f"{name}_base64"] = base64.b64encode(data).decode()
        line["latency_us"] = round(latency_us, 1)
        out.write(json.dumps(line) + "\n")
        return
    value = _text(msg.value)
    shown = value if value is not None else repr(msg.value)
    key = "" if msg.key is None else f" key={_text(msg.key) if _text(msg.key) is not None else repr(msg.key)}"
    out.write(f"{msg.topic}[{msg.partition}]@{msg.offset}{key} ({_latency(latency_us)}): {shown}\n")


def _latency(us: float) -> str:
    if us < 10_000:
        return f"{us:.0f} µs"
    if us < 10_000_000:
        return f"{us / 1e3:.1f} ms"
    return f"{us / 1e6:.1f} s"


# -------------------------------------------------------- topics, groups, stats ----


def _add_topics(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "topics", "create, list, describe and delete topics", "Manage the broker's topics.")
    tsub = p.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    c = _parser(tsub, "create", "create a topic", "Create a topic with N partitions.")
    c.add_argument("name", help="topic name: 1-249 of [A-Za-z0-9._-], not . or ..")
    c.add_argument("--partitions", "-p", type=_positive, help="number of partitions (default: the broker's)")
    _add_connection_options(c)
    c.set_defaults(func=lambda a: _run("topics create", lambda: _admin(a, _topics_create)))
    ls = _parser(tsub, "list", "list topics", "List the broker's topics with their partitions.")
    ls.add_argument("--format", choices=("text", "json"), default="text")
    _add_connection_options(ls)
    ls.set_defaults(func=lambda a: _run("topics list", lambda: _admin(a, _topics_list)))
    d = _parser(tsub, "describe", "describe a topic", "Partitions of a topic with their offsets and sizes.")
    d.add_argument("name")
    d.add_argument("--format", choices=("text", "json"), default="text")
    _add_connection_options(d)
    d.set_defaults(func=lambda a: _run("topics describe", lambda: _admin(a, _topics_describe)))
    rm = _parser(tsub, "delete", "delete a topic", "Delete a topic and its data.")
    rm.add_argument("name")
    _add_connection_options(rm)
    rm.set_defaults(func=lambda a: _run("topics delete", lambda: _admin(a, _topics_delete)))


def _add_groups(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "groups", "list and describe consumer groups", "Consumer groups and their lag.")
    gsub = p.add_subparsers(dest="groups_command", required=True, metavar="ACTION")
    ls = _parser(gsub, "list", "list consumer groups", "List the broker's consumer groups.")
    ls.add_argument("--format", choices=("text", "json"), default="text")
    _add_connection_options(ls)
    ls.set_defaults(func=lambda a: _run("groups list", lambda: _admin(a, _groups_list)))
    d = _parser(
        gsub, "describe", "describe a group", "Members, assignments, committed offsets and lag of a group."
    )
    d.add_argument("name")
    d.add_argument("--format", choices=("text", "json"), default="text")
    _add_connection_options(d)
    d.set_defaults(func=lambda a: _run("groups describe", lambda: _admin(a, _groups_describe)))


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "stats", "print the broker's statistics", "The broker's counters and gauges.")
    p.add_argument("--format", choices=("text", "json"), default="text")
    _add_connection_options(p)
    p.set_defaults(func=lambda a: _run("stats", lambda: _admin(a, _stats)))


def _admin(args: argparse.Namespace, body: Callable[[Any, argparse.Namespace], int]) -> int:
    from nanomq.client import Admin
    from nanomq.protocol import validate_topic_name

    if getattr(args, "topics_command", None) in ("create", "describe", "delete"):
        validate_topic_name(args.name)  # before connecting: a bad name is the answer whatever the broker

    with Admin(**_connection_kwargs(args)) as admin:
        return body(admin, args)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list | tuple | dict) else int(value or 0)


def _name(doc: dict[str, Any], *keys: str) -> str:
    return next((str(doc[k]) for k in keys if k in doc), "?")


def _table(rows: list[dict[str, Any]]) -> None:
    """Rows of dicts as aligned columns (keys of the first row, in its order)."""
    if not rows:
        return
    cols = [k for k in rows[0] if not isinstance(rows[0][k], list | dict)]
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _topics_create(admin: Any, args: argparse.Namespace) -> int:
    info = admin.create_topic(args.name, partitions=args.partitions)
    n = _count(info.get("partitions", args.partitions))
    print(f"created topic {_name(info, 'name', 'topic')} with {n} partition{'s' if n != 1 else ''}")
    return EXIT_OK


def _topics_delete(admin: Any, args: argparse.Namespace) -> int:
    admin.delete_topic(args.name)
    print(f"deleted topic {args.name}")
    return EXIT_OK


def _topics_list(admin: Any, args: argparse.Namespace) -> int:
    topics = admin.list_topics()
    if args.format == "json":
        print(_dump(topics))
        return EXIT_OK
    for t in topics:
        n = _count(t.get("partitions"))
        print(f"{_name(t, 'name', 'topic')}\t{n} partition{'s' if n != 1 else ''}")
    return EXIT_OK


def _topics_describe(admin: Any, args: argparse.Namespace) -> int:
    desc = admin.describe_topic(args.name)
    if args.format == "json":
        print(_dump(desc))
        return EXIT_OK
    parts = desc.get("partitions")
    n = _count(parts)
    print(f"topic {_name(desc, 'name', 'topic')}: {n} partition{'s' if n != 1 else ''}")
    if isinstance(parts, list) and parts and isinstance(parts[0], dict):
        _table(parts)
    for key, value in desc.items():
        if key not in ("name", "topic", "partitions"):
            print(f"{key}: {value}")
    return EXIT_OK


def _groups_list(admin: Any, args: argparse.Namespace) -> int:
    groups = admin.list_groups()
    if args.format == "json":
        print(_dump(groups))
        return EXIT_OK
    for g in groups:
        n = _count(g.get("members"))
        topic = g.get("topic", "")
        print(f"{_name(g, 'name', 'group')}\t{n} member{'s' if n != 1 else ''}\t{topic}".rstrip())
    return EXIT_OK


def _groups_describe(admin: Any, args: argparse.Namespace) -> int:
    desc = admin.describe_group(args.name)
    if args.format == "json":
        print(_dump(desc))
        return EXIT_OK
    members = desc.get("members", [])
    head = f"group {_name(desc, 'name', 'group')}"
    if "topic" in desc:
        head += f" on {desc['topic']}"
    if "generation" in desc:
        head += f": generation {desc['generation']}"
    head += f", {_count(members)} member{'s' if _count(members) != 1 else ''}"
    parts = desc.get("offsets", desc.get("partitions"))
    if isinstance(parts, list) and parts and isinstance(parts[0], dict) and "lag" in parts[0]:
        head += f", total lag {sum(int(p.get('lag', 0)) for p in parts)}"
    print(head)
    if isinstance(parts, list) and parts and isinstance(parts[0], dict):
        _table(parts)
    if isinstance(members, list) and members and isinstance(members[0], dict):
        print("members:")
        _table(members)
    return EXIT_OK


def _stats(admin: Any, args: argparse.Namespace) -> int:
    stats = admin.stats()
    if args.format == "json":
        print(_dump(stats))
        return EXIT_OK
    _print_tree(stats, "")
    return EXIT_OK


def _print_tree(doc: Any, indent: str) -> None:
    for key in doc:
        value = doc[key]
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_tree(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{indent}{key}:")
            for item in value:
                print(f"{indent}  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{indent}{key}: {value}")
