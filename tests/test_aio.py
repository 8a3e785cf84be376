"""nanomq.aio against a real broker: await publish, gather publish_async, async for, back-pressure, errors."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest
from test_client import BrokerProcess, create

from nanomq import BrokerUnreachableError, InvalidTopicNameError, PublishTimeoutError
from nanomq.aio import Message, Publisher, Subscriber

pytestmark = pytest.mark.timeout(120)


async def read_n(sub: Subscriber, n: int, timeout: float = 30.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += await sub.poll_batch(n - len(out), timeout=0.5)
    return out


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_await_publish_and_async_for(nmq: BrokerProcess, acks: int | str) -> None:
    create(nmq.address, "t")

    async def main() -> list[Message]:
        async with Publisher(nmq.address, acks=acks) as pub:
            first = await pub.publish("t", b"first", key=b"k")
            rest = await asyncio.gather(*(pub.publish_async("t", b"%d" % i) for i in range(1, 20)))
            batch = await pub.publish_batch("t", [b"x", b"y"])
            assert await pub.flush(10) == 0
            if acks == 0:
                assert first is None and set(rest) == {None} and batch is None
            else:
                assert [first, *rest, *batch] == list(range(22))
        got = []
        async with Subscriber(nmq.address, "t", start="earliest") as sub:
            async for msg in sub:
                got.append(msg)
                if len(got) == 22:
                    break
        return got

    msgs = asyncio.run(main())
    assert [m.offset for m in msgs] == list(range(22))
    assert msgs[0].key == b"k" and msgs[0].value == b"first"
    assert [m.value for m in msgs[1:20]] == [b"%d" % i for i in range(1, 20)]  # tasks write in order


def test_poll_batch_is_empty_on_timeout_and_the_loop_stays_free(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.get_running_loop().create_task(ticker())
        async with Subscriber(nmq.address, "t") as sub:
            assert await sub.poll_batch(10, timeout=0.3) == []
            assert await sub.poll(timeout=0.05) is None
        t.cancel()
        return ticks

    assert asyncio.run(main()) > 3  # the loop ran other tasks while poll_batch waited


def test_seek_lag_and_commit_in_a_group(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")

    async def main() -> None:
        async with Publisher(nmq.address) as pub:
            await pub.publish_batch("t", [b"%d" % i for i in range(10)])
        async with Subscriber(nmq.address, "t", group="g") as sub:
            assert [m.offset for m in await read_n(sub, 4)] == [0, 1, 2, 3]
            await sub.commit()
            assert (await sub.lag()).messages == 6
            await sub.seek(8)
            assert [m.offset for m in await read_n(sub, 2)] == [8, 9]
        async with Subscriber(nmq.address, "t", group="g") as sub:  # the group's committed offset
            assert (await read_n(sub, 1))[0].offset == 4

    asyncio.run(main())


def test_back_pressure_awaits_room_and_times_out(nmq: BrokerProcess) -> None:
    create(nmq.address, "t")

    async def main() -> None:
        async with Publisher(nmq.address, max_in_flight=5) as pub:
            await pub.publish("t", b"warm")
            nmq.signal(signal.SIGSTOP)
            try:
                tasks = [pub.publish_async("t", b"x", timeout=30) for _ in range(5)]
                await asyncio.sleep(0)  # let them write
                assert pub.in_flight == 5
                with pytest.raises(PublishTimeoutError, match="max_in_flight=5"):
                    await pub.publish("t", b"no room", timeout=0.2)
                assert await pub.flush(0.1) == 5
            finally:
                nmq.signal(signal.SIGCONT)
            assert await asyncio.gather(*tasks) == [1, 2, 3, 4, 5]
            assert await pub.flush(10) == 0

    asyncio.run(main())


def test_errors_are_the_sync_clients_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

        async def main() -> None:
            with pytest.raises(BrokerUnreachableError, match=f"127.0.0.1:{port}: connection refused"):
                async with Publisher(f"127.0.0.1:{port}"):
                    pass
            with pytest.raises(BrokerUnreachableError, match="connection refused"):
                async with Subscriber(f"127.0.0.1:{port}", "t"):
                    pass

        asyncio.run(main())


def test_invalid_topic_name(nmq: BrokerProcess) -> None:
    async def main() -> None:
        async with Publisher(nmq.address) as pub:
            with pytest.raises(InvalidTopicNameError, match="reserved"):
                await pub.publish("..", b"x")

    asyncio.run(main())
