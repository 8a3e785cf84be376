"""The clients over TLS and with token auth, against a real broker started with --tls-cert/--tls-key
and --auth-token-file (a self-signed certificate made with `openssl` for the test)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client import BrokerProcess, read_n

from nanomq import Admin, BrokerUnreachableError, NotAuthorizedError, Publisher, Subscriber, aio

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

TOKEN = "tls-test-token"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cert")
    crt, key = d / "broker.crt", d / "broker.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


@pytest.fixture(scope="module")
def secure(cert: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    d = tmp_path_factory.mktemp("secure")
    token = d / "token"
    token.write_text(TOKEN + "\n")
    crt, key = cert
    b = BrokerProcess(
        d / "data",
        "--tls-cert",
        str(crt),
        "--tls-key",
        str(key),
        "--auth-token-file",
        str(token),
        "--auto-create-topics",
    ).start()
    yield b
    b.kill()


def context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert[0]))


def test_publish_and_subscribe_over_tls_with_a_token(secure: BrokerProcess, cert: tuple[Path, Path]) -> None:
    tls = context(cert)
    with Admin(secure.address, auth_token=TOKEN, tls=tls) as admin:
        admin.create_topic("secret", 1, exist_ok=True)
    with Publisher(secure.address, auth_token=TOKEN, tls=tls, compression="zstd") as pub:
        offsets = pub.publish_batch("secret", [b"a" * 1000, b"b" * 100_00])
        futures = [pub.publish_async("secret", b"%d" % i) for i in range(500)]
        assert pub.flush(30) == 0
    first = offsets[0]
    assert [f.result() for f in futures] == list(range(first + 2, first + 502))
    with Subscriber(secure.address, "secret", auth_token=TOKEN, tls=tls, start=first) as sub:
        msgs = read_n(sub, 502)
    assert [m.value for m in msgs[:2]] == [b"a" * 1000, b"b" * 100_00]
    assert [m.value for m in msgs[2:]] == [b"%d" % i for i in range(500)]


def test_asyncio_clients_over_tls(secure: BrokerProcess, cert: tuple[Path, Path]) -> None:
    tls = context(cert)

    async def main() -> list[bytes]:
        async with aio.Publisher(secure.address, auth_token=TOKEN, tls=tls) as pub:
            first = await pub.publish("secret-aio", b"hello")
        async with aio.Subscriber(
            secure.address, "secret-aio", auth_token=TOKEN, tls=tls, start=first
        ) as sub:
            return [(await sub.poll(timeout=30)).value]

    assert asyncio.run(main()) == [b"hello"]


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_missing_or_wrong_token_is_refused(
    secure: BrokerProcess, cert: tuple[Path, Path], token: str | None
) -> None:
    with pytest.raises(NotAuthorizedError, match="not authorized"):
        Publisher(secure.address, auth_token=token, tls=context(cert))
    with pytest.raises(NotAuthorizedError):
        Subscriber(secure.address, "secret", auth_token=token, tls=context(cert))


def test_plain_tcp_to_a_tls_broker_fails_clearly(secure: BrokerProcess) -> None:
    with pytest.raises((BrokerUnreachableError, ConnectionError)) as info:
        Publisher(secure.address, auth_token=TOKEN, connect_timeout=2)
    assert secure.address in str(info.value)


def test_an_unverified_certificate_is_refused(secure: BrokerProcess) -> None:
    with pytest.raises(BrokerUnreachableError, match="TLS handshake failed: certificate verify failed"):
        Publisher(secure.address, auth_token=TOKEN, tls=True)
