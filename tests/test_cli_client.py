"""`nanomq publish|subscribe|topics|groups|stats` as subprocesses against a real broker:
output, errors, exit codes, --help everywhere, and the quickstart's three-terminal demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_client import BrokerProcess

from nanomq import cli_client

pytestmark = pytest.mark.timeout(120)


def nanomq(*args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "nanomq", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing will listen there while the test runs (it is ours until closed)


COMMANDS = [
    ["publish"],
    ["subscribe"],
    ["topics"],
    ["topics", "create"],
    ["topics", "list"],
    ["topics", "describe"],
    ["topics", "delete"],
    ["groups"],
    ["groups", "list"],
    ["groups", "describe"],
    ["stats"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_the_exit_codes(command: list[str]) -> None:
    r = nanomq(*command, "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "usage: nanomq " + " ".join(command) in out
    if len(command) == 2 or command[0] in ("publish", "subscribe", "stats"):
        assert "exit codes:" in out and "broker not reachable" in out


def test_exit_codes_documented_match_the_constants() -> None:
    for code in (
        cli_client.EXIT_OK,
        cli_client.EXIT_ERROR,
        cli_client.EXIT_USAGE,
        cli_client.EXIT_UNREACHABLE,
        cli_client.EXIT_NOT_FOUND,
        cli_client.EXIT_NOT_AUTHORIZED,
        cli_client.EXIT_INVALID,
        cli_client.EXIT_TIMEOUT,
        cli_client.EXIT_INTERRUPTED,
    ):
        assert f"\n  {code} " in cli_client.EXIT_CODES_EPILOG
    quickstart = (Path(__file__).parents[1] / "docs" / "QUICKSTART.md").read_text()
    for line in cli_client.EXIT_CODES_EPILOG.splitlines()[1:10]:
        code, meaning = line.split(maxsplit=1)
        assert f"| {code} | {meaning.split(' (')[0]}" in quickstart


def test_unreachable_broker_is_one_clear_line_and_exit_3() -> None:
    port = closed_port()
    for args in (
        ["publish", "-t", "demo", "-m", "hi"],
        ["subscribe", "-t", "demo"],
        ["topics", "list"],
        ["stats"],
    ):
        r = nanomq(*args, "--broker", f"127.0.0.1:{port}")
        assert r.returncode == cli_client.EXIT_UNREACHABLE
        assert r.stderr.decode().endswith(f"broker not reachable at 127.0.0.1:{port}: connection refused\n")
        assert b"Traceback" not in r.stderr


def test_address_from_the_environment() -> None:
    port = closed_port()
    r = nanomq("topics", "list", env={"NANOMQ_ADDRESS": f"127.0.0.1:{port}"})
    assert f"127.0.0.1:{port}".encode() in r.stderr


def test_invalid_topic_name_is_explained_before_connecting() -> None:
    r = nanomq("topics", "create", "a/b", "--broker", f"127.0.0.1:{closed_port()}")
    assert r.returncode == cli_client.EXIT_INVALID
    assert b"topic name 'a/b' is invalid: character '/' is not allowed" in r.stderr
    r = nanomq("publish", "-t", "..", "-m", "x", "--broker", f"127.0.0.1:{closed_port()}")
    assert r.returncode == cli_client.EXIT_INVALID and b"reserved" in r.stderr


def test_usage_errors_exit_2() -> None:
    assert nanomq("publish").returncode == 2
    assert nanomq("publish", "-t", "x", "--acks", "7").returncode == 2
    assert nanomq("subscribe", "-t", "x", "--from-beginning", "--offset", "3").returncode == 2
    r = nanomq("publish", "-t", "x", "-m", "y", "--count", "3", "--broker", f"127.0.0.1:{closed_port()}")
    assert r.returncode == 2 and b"cannot be combined" in r.stderr


def test_publish_message_file_stdin_then_subscribe_json(nmq: BrokerProcess, tmp_path: Path) -> None:
    b = ["--broker", nmq.address]
    r = nanomq("publish", "-t", "demo", "-m", "Hello!", "-k", "greeting", *b)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"0\n"
    f = tmp_path / "lines.txt"
    f.write_text("one\ntwo\n")
    assert nanomq("publish", "-t", "demo", "-f", str(f), "-q", *b).stdout == b""
    r = nanomq("publish", "-t", "demo", "--acks", "all", *b, input=b"three\nfour\n")
    assert r.stdout == b"3\n4\n" and b"published 2 messages to demo" in r.stderr
    r = nanomq("subscribe", "-t", "demo", "--from-beginning", "--count", "5", "--format", "json", *b)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [(x["offset"], x["key"], x["value"]) for x in lines] == [
        (0, "greeting", "Hello!"),
        (1, None, "one"),
        (2, None, "two"),
        (3, None, "three"),
        (4, None, "four"),
    ]
    assert all(x["topic"] == "demo" and x["partition"] == 0 and x["latency_us"] >= 0 for x in lines)
    assert all(x["timestamp"] > 1_600_000_000 * 10**9 for x in lines)


def test_subscribe_text_shows_latency_and_offset_start(nmq: BrokerProcess) -> None:
    b = ["--broker", nmq.address]
    nanomq("publish", "-t", "demo", "-q", *b, input=b"a\nb\nc\n")
    r = nanomq("subscribe", "-t", "demo", "--offset", "1", "-n", "2", *b)
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("demo[0]@1 (") and lines[0].endswith("): b")
    assert ("µs" in lines[0]) or ("ms" in lines[0]) or (" s)" in lines[0])


def test_subscribe_timeout_exits_7_and_a_missing_topic_4(nmq: BrokerProcess) -> None:
    r = nanomq("subscribe", "-t", "quiet", "-n", "1", "--timeout", "0.3", "--broker", nmq.address)
    assert r.returncode == cli_client.EXIT_NOT_FOUND  # waited --timeout for the topic to appear
    assert r.stderr == (
        b"nanomq subscribe: waiting for topic 'quiet' to be created\n"
        b"nanomq subscribe: topic 'quiet' does not exist\n"
    )
    assert nanomq("topics", "create", "quiet", "--broker", nmq.address).returncode == 0
    r = nanomq("subscribe", "-t", "quiet", "-n", "1", "--timeout", "0.3", "--broker", nmq.address)
    assert r.returncode == cli_client.EXIT_TIMEOUT
    assert b"no message for 0.3 s (0 received)" in r.stderr


def test_load_mode_prints_rate_and_ack_percentiles(nmq: BrokerProcess) -> None:
    b = ["--broker", nmq.address]
    r = nanomq("publish", "-t", "load", "--count", "2000", "--size", "64", "--batch", "100", *b)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "published 2000 messages of 64 bytes to load" in out and "msg/s" in out
    assert "P50" in out and "P99 " in out and "P99.9" in out
    r = nanomq("publish", "-t", "load", "--count", "200", "--rate", "2000", *b)
    assert r.returncode == 0, r.stderr
    assert "from intended send time" in r.stdout.decode()
    r = nanomq("topics", "describe", "load", "--format", "json", *b)
    (part,) = json.loads(r.stdout)["partitions"]
    assert part["end_offset"] == 2200


def test_topics_create_list_describe_delete(nmq: BrokerProcess) -> None:
    b = ["--broker", nmq.address]
    r = nanomq("topics", "create", "orders", "--partitions", "3", *b)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"created topic orders with 3 partitions\n"
    r = nanomq("topics", "create", "orders", *b)
    assert r.returncode == cli_client.EXIT_ERROR and b"orders" in r.stderr
    assert b"orders\t3 partitions" in nanomq("topics", "list", *b).stdout
    r = nanomq("topics", "describe", "orders", *b)
    assert r.returncode == 0 and b"topic orders: 3 partitions" in r.stdout and b"end_offset" in r.stdout
    assert nanomq("topics", "delete", "orders", *b).returncode == 0
    r = nanomq("topics", "describe", "orders", *b)
    assert r.returncode == cli_client.EXIT_NOT_FOUND, r.stderr


def test_groups_and_stats(nmq: BrokerProcess) -> None:
    b = ["--broker", nmq.address]
    nanomq("publish", "-t", "g", "-q", *b, input=b"1\n2\n3\n")
    r = nanomq("subscribe", "-t", "g", "-g", "readers", "--from-beginning", "-n", "2", *b)
    assert r.returncode == 0, r.stderr
    r = nanomq("groups", "describe", "readers", "--format", "json", *b)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == "readers" and doc["topic"] == "g"
    assert [(o["committed"], o["lag"]) for o in doc["offsets"]] == [(2, 1)]
    r = nanomq("groups", "describe", "readers", *b)
    assert b"group readers on g" in r.stdout and b"total lag 1" in r.stdout
    assert b"readers" in nanomq("groups", "list", *b).stdout
    assert nanomq("groups", "describe", "nobody", *b).returncode == cli_client.EXIT_NOT_FOUND
    r = nanomq("stats", "--format", "json", *b)
    assert r.returncode == 0 and "messages_in" in json.loads(r.stdout)
    assert b"connections" in nanomq("stats", *b).stdout


def test_auth_errors_exit_5(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    b = BrokerProcess(tmp_path / "data", "--auth-token-file", str(token)).start()
    try:
        r = nanomq("topics", "list", "--broker", b.address)
        assert r.returncode == cli_client.EXIT_NOT_AUTHORIZED and b"not authorized" in r.stderr
        r = nanomq("topics", "list", "--broker", b.address, "--auth-token", "wrong")
        assert r.returncode == cli_client.EXIT_NOT_AUTHORIZED
        r = nanomq("topics", "list", "--broker", b.address, "--auth-token-file", str(token))
        assert r.returncode == 0, r.stderr
    finally:
        b.kill()


def test_quickstart_three_terminals(nmq: BrokerProcess) -> None:
    """docs/QUICKSTART.md: broker (the fixture), `nanomq subscribe` (before the topic exists: it
    waits for it), then `nanomq publish` (which creates it)."""
    b = ["--broker", nmq.address]
    sub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanomq",
            "subscribe",
            "--topic",
            "demo",
            "--from-beginning",
            "--count",
            "1",
            *b,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        r = nanomq("publish", "--topic", "demo", "--message", "Hello!", *b)
        assert r.returncode == 0, r.stderr
        out, err = sub.communicate(timeout=60)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    line = out.decode().strip()
    assert line.startswith("demo[0]@0 (") and line.endswith("): Hello!")
