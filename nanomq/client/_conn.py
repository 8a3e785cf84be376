"""One client connection to a broker: a socket, the handshake, and reading by whoever waits.

Callers send from their own thread (under a lock, so frames never interleave) and get a
`concurrent.futures.Future` per request, resolved when the reply with the same correlation id
arrives. Frames the broker pushes unasked (DELIVER) go to a handler. When the connection
breaks, every pending future fails with ConnectionLostError and `closed` is set; reconnecting
is the owner's business (`Pool`, the Subscriber), with back-off.

Who reads (leader/follower): one thread at a time holds the *read role* and reads, decodes and
dispatches frames. A caller that waits for something (`wait_for`, `result`: a reply, a
delivery) takes the role and reads the socket itself, so what it waits for reaches it without a
hand-off between threads (each costs ≈ 100 µs on a busy 2-vCPU machine). When no caller has
waited for `GRACE` seconds, the connection's own reader thread takes the role, so callbacks
(`on_delivery`) and pushes are handled without anybody polling; a caller that wants the role
back wakes it through a self-pipe. Callers that wait while another thread reads are woken when
it has dispatched frames.

TLS sockets are not safe to read and write from two threads at once (one OpenSSL object),
so the socket is non-blocking and every read and write of it happens under `_io_lock`;
threads wait for readiness with `select` outside the lock.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from nanomq import protocol as P
from nanomq.client._errors import error_from_frame, unreachable
from nanomq.client._util import format_address, parse_address
from nanomq.errors import ConnectionLostError

log = logging.getLogger(__name__)

_RECV_BYTES = 256 * 1024
GRACE = 0.002
"""Seconds after a caller last read before the reader thread takes the read role back."""
_PARKED_CHECK = 0.05
"""How often a parked reader thread looks whether callers stopped reading (an idle process's
wake-ups: 20 a second, not 500); a caller that leaves replies pending wakes it at once."""


OnReply = Callable[[P.Frame | None, BaseException | None], None]
"""What `Connection.request_cb` calls with the reply frame, or with the error instead."""


def _call(on_reply: OnReply, frame: P.Frame | None, exc: BaseException | None) -> None:
    """Run a reply callback; what it raises is logged (as a future's callbacks' are), so it
    cannot fail the connection whose thread runs it."""
    try:
        on_reply(frame, exc)
    except Exception:
        log.exception("reply callback %r raised", on_reply)


def make_ssl_context(tls: bool | ssl.SSLContext | None) -> ssl.SSLContext | None:
    """None/False → plain TCP; True → the system's default verifying context; a context as given."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return ssl.create_default_context()
    if isinstance(tls, ssl.SSLContext):
        return tls
    raise TypeError(f"tls must be None, True or an ssl.SSLContext, not {type(tls).__name__}")


class Handshake:
    """The client's side of HELLO → WELCOME without the I/O, shared by the blocking and the
    asyncio connections: send `hello`, `feed` what arrives until it returns a frame, then
    `welcome(frame)` gives the broker's limits or raises the error it answered with."""

    def __init__(self, address: str, client_id: str | None, auth_token: str | bytes | None) -> None:
        if isinstance(auth_token, str):
            auth_token = auth_token.encode()
        self.address = address
        self.hello = P.encode_hello(0, client_id or "", auth_token)
        self._decoder = P.FrameDecoder()

    def feed(self, data: bytes) -> P.Frame | None:
        """The broker's reply once it is whole (None until then); b"" means it hung up."""
        if not data:
            raise ConnectionLostError(f"broker at {self.address} closed the connection during the handshake")
        frames = self._decoder.feed(data)
        return frames[0] if frames else None

    def welcome(self, frame: P.Frame) -> P.Welcome:
        """The WELCOME's limits, or the broker's ERROR raised as its exception."""
        err = error_from_frame(frame)
        if err is not None:
            raise err
        return P.parse_welcome(frame)


class Connection:
    """A handshaken connection; `request()` sends a frame and returns the future of its reply."""

    def __init__(
        self,
        address: str | tuple[str, int],
        *,
        client_id: str | None = None,
        auth_token: str | bytes | None = None,
        tls: bool | ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        on_push: Callable[[P.Frame], None] | None = None,
        on_close: Callable[[Connection, BaseException | None], None] | None = None,
    ) -> None:
        self.host, self.port = parse_address(address)
        self.address = format_address(self.host, self.port)
        self._on_push = on_push
        self._on_close = on_close
        self._pending: dict[int, Future[P.Frame] | OnReply] = {}
        self._pending_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.closed = threading.Event()
        self.close_reason: BaseException | None = None
        self._decoder: P.FrameDecoder
        # the read role: the thread reading now (None: nobody), callers waiting for it, and
        # when a caller last gave it up; _turn wakes waiting callers, _idle the reader thread
        self._role_lock = threading.Lock()
        self._turn = threading.Condition(self._role_lock)
        self._idle = threading.Condition(self._role_lock)
        self._holder: int | None = None
        self._wanted = 0
        self._released = 0.0
        self._sock = self._connect(client_id, auth_token, make_ssl_context(tls), connect_timeout)
        self._sock.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._reader = threading.Thread(target=self._read_loop, name=f"nanomq-io-{self.address}", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ setup ----

    def _connect(
        self,
        client_id: str | None,
        auth_token: str | bytes | None,
        context: ssl.SSLContext | None,
        timeout: float,
    ) -> socket.socket:
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise unreachable(self.address, exc) from exc
        sock: socket.socket = raw
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                try:
                    sock = context.wrap_socket(raw, server_hostname=self.host)
                except (ssl.SSLError, OSError) as exc:
                    raise unreachable(self.address, exc, what="TLS handshake failed") from exc
            welcome = self._handshake(sock, client_id, auth_token, timeout)
        except BaseException:
            sock.close()  # the TLS socket owns the descriptor once wrapped
            raw.close()
            raise
        self.welcome = welcome
        return sock

    def _handshake(
        self, sock: socket.socket, client_id: str | None, auth_token: str | bytes | None, timeout: float
    ) -> Any:
        hs = Handshake(self.address, client_id, auth_token)
        sock.settimeout(timeout)
        try:
            sock.sendall(hs.hello)
            frame = None
            while frame is None:
                frame = hs.feed(sock.recv(65536))
        except TimeoutError as exc:
            raise unreachable(self.address, exc, what=f"no handshake reply within {timeout} s") from exc
        except OSError as exc:
            if isinstance(exc, ConnectionLostError):
                raise
            raise unreachable(self.address, exc) from exc
        welcome = hs.welcome(frame)
        self._decoder = P.FrameDecoder(max_frame=welcome.max_frame)
        return welcome

    # ------------------------------------------------------------------- send ----

    def next_id(self) -> int:
        """A fresh correlation id."""
        return next(self._ids) & 0xFFFFFFFF or next(self._ids)

    def request(self, build: Callable[[int], bytes | bytearray | list[bytes]]) -> Future[P.Frame]:
        """Send the frame `build(correlation_id)` returns; the future resolves with the reply frame.

        The future fails with the typed NanoMQError an ERROR reply maps to, or with
        ConnectionLostError when the connection breaks first.
        """
        corr = self.next_id()
        fut: Future[P.Frame] = Future()
        with self._pending_lock:
            if self.closed.is_set():
                fut.set_exception(self._lost())
                return fut
            self._pending[corr] = fut
        try:
            self.send(build(corr))
        except BaseException as exc:
            with self._pending_lock:
                self._pending.pop(corr, None)
            if not fut.done():
                fut.set_exception(exc)
        self._unpark()
        return fut

    def request_cb(self, build: Callable[[int], bytes | bytearray | list[bytes]], on_reply: OnReply) -> None:
        """`request` without a future, for the client's own hot paths: `on_reply(frame, None)`
        — or `on_reply(None, error)`: the typed error of an ERROR reply, ConnectionLostError, or
        what sending raised — runs once, on the thread that reads the reply or fails the send."""
        corr = self.next_id()
        with self._pending_lock:
            closed = self.closed.is_set()
            if not closed:
                self._pending[corr] = on_reply
        if closed:
            _call(on_reply, None, self._lost())
            return
        try:
            self.send(build(corr))
        except BaseException as exc:
            with self._pending_lock:
                mine = self._pending.pop(corr, None)
            if mine is not None:
                _call(on_reply, None, exc)
        self._unpark()

    def _unpark(self) -> None:
        """A reply is due and nobody reads: have the parked reader thread look now (not after
        up to _PARKED_CHECK), so a callback or a flush waits for no timer."""
        if self._holder is None:
            with self._role_lock:
                if self._holder is None:
                    self._idle.notify()

    def expect(self, corr: int) -> Future[P.Frame]:
        """A future for the reply to a frame the caller sends itself with correlation id `corr`."""
        fut: Future[P.Frame] = Future()
        with self._pending_lock:
            if self.closed.is_set():
                fut.set_exception(self._lost())
            else:
                self._pending[corr] = fut
        self._unpark()
        return fut

    def send(self, data: bytes | bytearray | list[bytes]) -> None:
        """Write whole frames (a list is written as one run, never interleaved with others)."""
        if self.closed.is_set():
            raise self._lost()
        buf = memoryview(b"".join(data) if isinstance(data, list) else data)
        sent = 0
        total = len(buf)
        while sent < total:
            with self._io_lock:
                if self.closed.is_set():
                    raise self._lost()
                try:
                    while sent < total:
                        n = self._sock.send(buf[sent:])
                        if n == 0:
                            break
                        sent += n
                    continue
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
                except OSError as exc:
                    self._fail(exc)
                    raise self._lost() from exc
            # the broker's window is full: wait for room without holding the lock
            try:
                select.select([], [self._sock], [], 0.5)
            except (OSError, ValueError) as exc:
                self._fail(exc)
                raise self._lost() from exc

    # ------------------------------------------------------------------- read ----

    def _read_loop(self) -> None:
        """The reader thread: holds the read role whenever no caller has wanted it for GRACE s."""
        me = threading.get_ident()
        while not self.closed.is_set():
            with self._role_lock:
                if self._holder is not None or self._wanted:
                    self._idle.wait(_PARKED_CHECK)  # a caller reads: look again later
                    continue
                quiet = time.monotonic() - self._released
                if quiet < GRACE:
                    self._idle.wait(GRACE - quiet)
                    continue
                self._holder = me
            try:
                self._step(0.5, wakeable=True)
            finally:
                self._give_up_role(caller=False)
        with self._role_lock:  # a caller still reading would select on a closed descriptor
            self._turn.wait_for(lambda: self._holder is None, 5.0)
        with self._io_lock:  # nobody reads or writes a closed connection: release the socket now
            self._sock.close()  # (not under the role lock: send() fails the connection under _io_lock)
        with self._role_lock:
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            os.close(fd)

    def _give_up_role(self, *, caller: bool) -> None:
        with self._role_lock:
            self._holder = None
            if caller:  # the reader thread waits GRACE after a caller read, not after itself
                self._released = time.monotonic()
                if self._pending:  # replies due (publish_async acks): no _PARKED_CHECK delay
                    self._idle.notify()
            self._turn.notify_all()

    def wait_for(self, predicate: Callable[[], object], timeout: float | None) -> bool:
        """Return once `predicate()` is true (True) or `timeout` seconds passed or the connection
        closed (predicate's value then). Reads the socket on this thread while it waits, unless
        another thread is reading — then it waits for that thread to dispatch."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.get_ident()
        while True:
            if predicate():
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if self.closed.is_set() or (left is not None and left <= 0):
                return bool(predicate())
            slice_ = 0.5 if left is None else min(left, 0.5)
            with self._role_lock:
                holder = self._holder
                if holder is None:
                    self._holder = me
                elif holder != me:  # another thread reads: be woken when it dispatches
                    if predicate():  # (checked under the lock the reader notifies under)
                        return True
                    self._wanted += 1
                    try:
                        if holder == self._reader.ident:
                            self._poke()
                        self._turn.wait(slice_)
                    finally:
                        self._wanted -= 1
                    continue
            # this thread reads (holder == me: a callback of ours waits: read on, nested)
            try:
                while not predicate() and not self.closed.is_set():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._step(0.5 if left is None else min(left, 0.5), wakeable=False)
            finally:
                if holder is None:
                    self._give_up_role(caller=True)

    def read_ready(self) -> None:
        """Dispatch, on this thread, what has already arrived, without waiting for more —
        unless another thread holds the read role (then that thread dispatches it)."""
        if self._holder is not None or self.closed.is_set():
            return
        with self._role_lock:
            if self._holder is not None:
                return
            self._holder = threading.get_ident()
        try:
            self._step(0.0, wakeable=False, block=False)
        finally:
            self._give_up_role(caller=True)

    def result(self, fut: Future[P.Frame], timeout: float | None) -> P.Frame:
        """`fut.result(timeout)`, reading the socket on this thread while it waits."""
        if not self.wait_for(fut.done, timeout):
            raise TimeoutError(f"no reply from the broker at {self.address} within {timeout} s")
        return fut.result(0)

    def _poke(self) -> None:
        """Wake the reader thread out of its select (role lock held)."""
        if self._wake_w < 0:
            return  # the reader thread has ended
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # already poked (the pipe is full), or closing

    def _step(self, timeout: float, *, wakeable: bool, block: bool = True) -> None:
        """Read what is there (waiting up to `timeout` for it, unless not `block`) and dispatch
        it; as the role holder. wakeable: the reader thread's wait also ends when a caller pokes
        the self-pipe."""
        sock = self._sock
        try:
            with self._io_lock:
                data = self._recv_available(sock)
            if data is None and not block:
                return
            if data is None:
                fds: list[Any] = [sock, self._wake_r] if wakeable else [sock]
                ready, _, _ = select.select(fds, [], [], timeout)
                if wakeable and self._wake_r in ready:
                    try:
                        while os.read(self._wake_r, 64):
                            pass
                    except BlockingIOError:
                        pass
                if sock not in ready:
                    return
                with self._io_lock:
                    data = self._recv_available(sock)
                if data is None:
                    return
            if data == b"":
                self._fail(ConnectionLostError(f"broker at {self.address} closed the connection"))
                return
            for frame in self._decoder.feed(data):
                self._dispatch(frame)
        except Exception as exc:  # a broken socket, an invalid frame from the broker
            if not self.closed.is_set():
                log.debug("connection to %s failed: %r", self.address, exc)
            self._fail(exc)
            return
        with self._role_lock:
            if self._wanted:
                self._turn.notify_all()

    @staticmethod
    def _recv_available(sock: socket.socket) -> bytes | None:
        """What can be read without blocking: bytes, b"" at EOF, None when nothing is ready."""
        chunks = []
        try:
            while True:
                data = sock.recv(_RECV_BYTES)
                if not data:
                    if chunks:
                        break
                    return b""
                chunks.append(data)
                if len(data) < _RECV_BYTES and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        if not chunks:
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _dispatch(self, frame: P.Frame) -> None:
        with self._pending_lock:
            fut = self._pending.pop(frame.correlation_id, None)
        if fut is None:
            if self._on_push is not None:
                self._on_push(frame)
            else:
                log.debug("frame %r from %s with no request waiting", frame.opcode, self.address)
            return
        err = error_from_frame(frame)
        if type(fut) is not Future:
            _call(fut, None if err is not None else frame, err)
        elif err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(frame)

    # -------------------------------------------------------------- lifetime ----

    def _lost(self) -> ConnectionLostError:
        reason = self.close_reason
        if isinstance(reason, ConnectionLostError):
            return ConnectionLostError(str(reason))
        detail = f": {reason}" if reason is not None else ""
        return ConnectionLostError(f"connection to broker at {self.address} lost{detail}")

    def _fail(self, reason: BaseException | None) -> None:
        with self._pending_lock:
            if self.closed.is_set():
                return
            self.close_reason = reason
            self.closed.set()
            pending, self._pending = self._pending, {}
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._role_lock:  # waiters look again (and see `closed`); the reader thread ends
            self._turn.notify_all()
            self._idle.notify_all()
        err = self._lost()
        for fut in pending.values():
            if type(fut) is not Future:
                _call(fut, None, ConnectionLostError(str(err)))
            elif not fut.done():
                fut.set_exception(ConnectionLostError(str(err)))
        if self._on_close is not None:
            self._on_close(self, reason)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    def close(self) -> None:
        """Close the socket; pending requests fail with ConnectionLostError."""
        self._fail(ConnectionLostError(f"connection to broker at {self.address} closed by the client"))
        with self._role_lock:
            if self._holder == self._reader.ident:
                self._poke()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)
