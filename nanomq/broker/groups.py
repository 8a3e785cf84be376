"""Consumer groups: membership, generations, assignment (range or round-robin), committed offsets.

The broker is the coordinator and computes assignments itself (no leader member). Any change of
membership — a join, a leave, a session that expired, a connection that closed — starts a new
generation: every member's partitions are recomputed at once and each member is told with a
pushed REBALANCE, after which it re-JOINs to learn its partitions. Rebalancing is eager: a
member that lost a partition may still be reading it until it hears of the new generation, so a
message can be delivered twice — but its commits for that partition are refused from then on
(ILLEGAL_GENERATION / NOT_ASSIGNED), so the committed offset never moves backwards behind the new
owner's back, and what a dead member took but did not commit is delivered again (at-least-once).
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nanomq.errors import ProtocolError
from nanomq.protocol import ErrorCode, Strategy

log = logging.getLogger(__name__)

MIN_SESSION_MS = 1000
MAX_SESSION_MS = 300_000


def assign(member_ids: list[str], partitions: int, strategy: Strategy) -> dict[str, tuple[int, ...]]:
    """Partitions per member: members in sorted id order; range gives contiguous runs (the first
    `partitions mod members` get one more), round-robin gives partition i to member i mod n."""
    members = sorted(member_ids)
    out: dict[str, list[int]] = {m: [] for m in members}
    if not members:
        return {}
    if strategy == Strategy.ROUND_ROBIN:
        for p in range(partitions):
            out[members[p % len(members)]].append(p)
    else:
        per, extra = divmod(partitions, len(members))
        p = 0
        for i, m in enumerate(members):
            n = per + (1 if i < extra else 0)
            out[m] = list(range(p, p + n))
            p += n
    return {m: tuple(ps) for m, ps in out.items()}


@dataclass(slots=True)
class Member:
    member_id: str
    client_id: str
    owner: object  # the connection that joined; the member dies with it
    push: Callable[[bytes], None]  # writes a frame to that connection
    session_timeout_ms: int
    last_seen: float = field(default_factory=time.monotonic)
    partitions: tuple[int, ...] = ()


@dataclass(slots=True)
class Group:
    name: str
    topic: str
    strategy: Strategy
    generation: int = 0
    members: dict[str, Member] = field(default_factory=dict)


class Coordinator:
    """Every consumer group of the broker (offsets live in an OffsetStore)."""

    def __init__(
        self, partitions_of: Callable[[str], int], encode_rebalance: Callable[[str, int], bytes]
    ) -> None:
        self.groups: dict[str, Group] = {}
        self._partitions_of = partitions_of
        self._encode_rebalance = encode_rebalance
        self._ids = itertools.count(1)

    def get(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            raise ProtocolError(ErrorCode.UNKNOWN_GROUP, f"group {name!r} does not exist")
        return group

    def join(
        self,
        name: str,
        topic: str,
        member_id: str,
        client_id: str,
        owner: object,
        push: Callable[[bytes], None],
        session_timeout_ms: int,
        strategy: Strategy,
    ) -> tuple[Group, Member]:
        """Add a member (member_id "") or refresh one; rebalance when membership changed."""
        if not MIN_SESSION_MS <= session_timeout_ms <= MAX_SESSION_MS:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"session timeout {session_timeout_ms} ms is not within "
                f"{MIN_SESSION_MS}..{MAX_SESSION_MS} ms",
            )
        group = self.groups.get(name)
        if group is not None and group.members and group.topic != topic:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"group {name!r} consumes topic {group.topic!r}, not {topic!r}",
            )
        if group is None:
            group = self.groups[name] = Group(name, topic, strategy)
        elif not group.members:
            group.topic, group.strategy = topic, strategy
        if member_id:
            member = group.members.get(member_id)
            if member is None:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_MEMBER, f"member {member_id!r} is not in group {name!r}: join again"
                )
            member.last_seen = time.monotonic()
            if member.owner is not owner:
                member.owner, member.push = owner, push
            return group, member
        member = Member(
            f"{client_id or 'member'}-{next(self._ids)}-{uuid.uuid4().hex[:8]}",
            client_id,
            owner,
            push,
            session_timeout_ms,
        )
        group.members[member.member_id] = member
        self._rebalance(group, f"{member.member_id} joined")
        return group, member

    def heartbeat(self, name: str, member_id: str) -> int:
        group = self.get(name)
        member = group.members.get(member_id)
        if member is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_MEMBER, f"member {member_id!r} is not in group {name!r}: join again"
            )
        member.last_seen = time.monotonic()
        return group.generation

    def leave(self, name: str, member_id: str) -> None:
        group = self.get(name)
        if group.members.pop(member_id, None) is None:
            raise ProtocolError(ErrorCode.UNKNOWN_MEMBER, f"member {member_id!r} is not in group {name!r}")
        self._rebalance(group, f"{member_id} left")

    def drop_owner(self, owner: object) -> None:
        """A connection closed: its members leave their groups."""
        for group in list(self.groups.values()):
            gone = [m for m, mem in group.members.items() if mem.owner is owner]
            for m in gone:
                del group.members[m]
            if gone:
                self._rebalance(group, f"connection of {', '.join(gone)} closed")

    def expire(self) -> None:
        """Remove members whose session timed out."""
        now = time.monotonic()
        for group in list(self.groups.values()):
            gone = [
                m for m, mem in group.members.items() if now - mem.last_seen > mem.session_timeout_ms / 1000
            ]
            for m in gone:
                del group.members[m]
            if gone:
                self._rebalance(group, f"session of {', '.join(gone)} expired")

    def topic_changed(self, topic: str) -> None:
        """A topic was created or deleted: groups on it rebalance."""
        for group in list(self.groups.values()):
            if group.topic == topic and group.members:
                self._rebalance(group, f"topic {topic!r} changed")

    def check_commit(
        self, name: str, topic: str, member_id: str, generation: int, partitions: list[int]
    ) -> None:
        """Raise unless this member may commit these partitions now."""
        group = self.groups.get(name)
        if not member_id:
            if group is not None and group.members:
                raise ProtocolError(
                    ErrorCode.ILLEGAL_GENERATION,
                    f"group {name!r} has live members: commit as a member of "
                    f"its generation {group.generation}",
                )
            return
        if group is None:
            raise ProtocolError(ErrorCode.UNKNOWN_GROUP, f"group {name!r} does not exist")
        member = group.members.get(member_id)
        if member is None:
            raise ProtocolError(ErrorCode.UNKNOWN_MEMBER, f"member {member_id!r} is not in group {name!r}")
        member.last_seen = time.monotonic()
        if generation != group.generation:
            raise ProtocolError(
                ErrorCode.ILLEGAL_GENERATION,
                f"generation {generation} is not group {name!r}'s current generation {group.generation}",
            )
        if topic != group.topic:
            raise ProtocolError(
                ErrorCode.NOT_ASSIGNED, f"group {name!r} consumes {group.topic!r}, not {topic!r}"
            )
        foreign = sorted(set(partitions) - set(member.partitions))
        if foreign:
            raise ProtocolError(
                ErrorCode.NOT_ASSIGNED,
                f"partition(s) {foreign} of {topic!r} are not assigned to {member_id!r} "
                f"in generation {generation}",
            )

    def _rebalance(self, group: Group, why: str) -> None:
        if not group.members:
            # an empty group keeps nothing but its committed offsets (in the OffsetStore); its
            # generation restarts at 1 with the next member
            self.groups.pop(group.name, None)
            log.info("group %r is empty (%s)", group.name, why)
            return
        group.generation += 1
        try:
            n = self._partitions_of(group.topic)
        except ProtocolError:
            n = 0
        plan = assign(list(group.members), n, group.strategy)
        for m, parts in plan.items():
            group.members[m].partitions = parts
        log.info("group %r generation %d (%s): %s", group.name, group.generation, why, plan)
        frame = self._encode_rebalance(group.name, group.generation)
        for member in group.members.values():
            try:
                member.push(frame)
            except Exception:  # a closing connection; it will leave
                log.debug("REBALANCE to %s failed", member.member_id, exc_info=True)

    def describe(self, group: Group) -> dict[str, Any]:
        return {
            "name": group.name,
            "topic": group.topic,
            "generation": group.generation,
            "strategy": "round_robin" if group.strategy == Strategy.ROUND_ROBIN else "range",
            "members": [
                {"member_id": m.member_id, "client_id": m.client_id, "partitions": list(m.partitions)}
                for m in sorted(group.members.values(), key=lambda m: m.member_id)
            ],
        }
