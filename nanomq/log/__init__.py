"""The segmented write-ahead log: `Log.open(path)`, append, read, sync (docs/ARCHITECTURE.md)."""

from nanomq.log.log import Log, LogSlice, LogStats, RecoveryReport
from nanomq.log.recovery import Damage, TruncatedTail

__all__ = ["Damage", "Log", "LogSlice", "LogStats", "RecoveryReport", "TruncatedTail"]
