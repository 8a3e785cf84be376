"""Starting and stopping the harness's processes: load-generator children and server subprocesses."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["child_main", "log_tail", "reap", "spawn", "stop_server"]


def spawn(ctx: Any, target: Callable[..., None], args: tuple, name: str) -> tuple[Any, Any]:
    """Start `target(*args, conn)` in a daemon process of `ctx`; (the process, the end to read its results).

    The child's write end is closed here, so reading raises EOFError once the child is gone."""
    r, w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, w), name=name, daemon=True)
    proc.start()
    w.close()
    return proc, r


def child_main(
    name: str, open_end: Callable[[], Any], work: Callable[[Any], dict], go: Any, conn: Any
) -> None:
    """A load-generator child's side of the start protocol, run in the child process.

    Opens its end of the transport, sends {"ready": True}, waits for `go`, sends work(end)'s
    result; a failure at any step is sent as {"error": ...} naming `name`. The end is closed."""
    try:
        end = open_end()
    except BaseException as exc:
        conn.send({"error": f"{name} could not open its end: {exc!r}"})
        return
    try:
        conn.send({"ready": True})
        go.wait()
        conn.send(work(end))
    except BaseException as exc:
        conn.send({"error": f"{name} failed: {exc!r}"})
    finally:
        end.close()


def reap(procs: Iterable[Any], wait_s: float = 5.0) -> None:
    """Join each multiprocessing child, killing one still alive after `wait_s` seconds."""
    for proc in procs:
        proc.join(timeout=wait_s)
        if proc.is_alive():
            proc.kill()
            proc.join()


def stop_server(proc: subprocess.Popen, wait_s: float) -> None:
    """SIGTERM a server (it flushes and closes its files), SIGKILL it after `wait_s` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path) -> str:
    """The last 500 characters of a server's log, for an error message."""
    try:
        return path.read_text(errors="replace")[-500:].strip() or "(no output)"
    except OSError:
        return "(no log)"
