# Stub of the C module csrc/py/ringcore.c: the base class of nanomq.Ring.
class RingCore:
    _peek_view: memoryview | None
    def _bind(self, ring: int, base: int, push: int, peek: int, keep: object, /) -> None: ...
    def push(self, data: bytes | bytearray | memoryview, /) -> bool:
        """Append one record without blocking; False when the ring is full."""
    def pop(self) -> bytes | None:
        """Take one record without blocking; None when the ring is empty."""
