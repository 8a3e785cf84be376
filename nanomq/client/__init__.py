"""NanoMQ's clients: Publisher, Subscriber and Admin over the broker's TCP protocol.

Built on `nanomq.protocol` and `nanomq.record` only (never on the broker). The asyncio
versions are in `nanomq.aio`.
"""

from nanomq.client._util import Message
from nanomq.client.admin import Admin
from nanomq.client.publisher import Publisher
from nanomq.client.subscriber import Lag, PartitionLag, Subscriber

__all__ = ["Admin", "Lag", "Message", "PartitionLag", "Publisher", "Subscriber"]
