"""Admin: topics, groups, offsets and broker statistics (what `nanomq topics|groups|stats` use)."""

from __future__ import annotations

import os
import ssl
import time
from typing import Any

from nanomq import protocol as P
from nanomq.client._conn import Connection
from nanomq.errors import TopicExistsError


class Admin:
    """A connection for managing a broker. Replies of the describe/list/stats calls are the
    broker's JSON documents as dicts (docs/PROTOCOL.md lists their keys)."""

    def __init__(
        self,
        address: str | tuple[str, int] = "127.0.0.1:9000",
        client_id: str | None = None,
        auth_token: str | bytes | None = None,
        tls: bool | ssl.SSLContext | None = None,
        *,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
    ) -> None:
        self.timeout = timeout
        self._conn = Connection(
            address,
            client_id=client_id or f"nanomq-admin-{os.getpid()}",
            auth_token=auth_token,
            tls=tls,
            connect_timeout=connect_timeout,
        )
        self.address = self._conn.address
        self.welcome = self._conn.welcome

    def _call(self, build: Any) -> P.Frame:
        return self._conn.result(self._conn.request(build), self.timeout)

    def create_topic(
        self, name: str, partitions: int | None = None, *, exist_ok: bool = False
    ) -> dict[str, Any]:
        """Create a topic (`partitions` None: the broker's default); returns its description.

        Raises InvalidTopicNameError (saying why) before sending, TopicExistsError unless `exist_ok`.
        """
        P.validate_topic_name(name)
        if partitions is not None and partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        try:
            return P.parse_info(self._call(lambda c: P.encode_create_topic(c, name, partitions or 0)))
        except TopicExistsError:
            if not exist_ok:
                raise
            return self.describe_topic(name)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data (TopicNotFoundError when there is none)."""
        P.validate_topic_name(name)
        self._call(lambda c: P.encode_delete_topic(c, name))

    def list_topics(self) -> list[dict[str, Any]]:
        """Every topic's description."""
        return list(P.parse_info(self._call(P.encode_list_topics)).get("topics", []))

    def describe_topic(self, name: str) -> dict[str, Any]:
        """A topic's description: partitions with their offsets and sizes."""
        P.validate_topic_name(name)
        return P.parse_info(self._call(lambda c: P.encode_describe_topic(c, name)))

    def offsets(self, topic: str, group: str | None = None) -> list[P.PartitionOffsets]:
        """Per partition: first offset, end offset, `group`'s committed offset (-1: none), last timestamp."""
        P.validate_topic_name(topic)
        return P.parse_offsets_result(self._call(lambda c: P.encode_offsets(c, topic, group or "")))

    def list_groups(self) -> list[dict[str, Any]]:
        """Every consumer group's description."""
        return list(P.parse_info(self._call(P.encode_list_groups)).get("groups", []))

    def describe_group(self, name: str) -> dict[str, Any]:
        """A group's members, generation, and per partition committed offset, end offset and lag."""
        return P.parse_info(self._call(lambda c: P.encode_describe_group(c, name)))

    def stats(self) -> dict[str, Any]:
        """The broker's counters and gauges."""
        return P.parse_info(self._call(P.encode_stats))

    def ping(self) -> float:
        """Round-trip time to the broker in seconds."""
        t0 = time.perf_counter()
        self._call(P.encode_ping)
        return time.perf_counter() - t0

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
