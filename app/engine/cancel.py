"""Cooperative cancellation: a threading.Event with a reason and a deadline.

Threads cannot be killed, so every blocking wait in an execution takes its token: sleeps use
`token.wait`, and a blocking socket is registered with `on_cancel` so cancelling shuts it down
and the read returns at once instead of at its own timeout."""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

SHUTDOWN = "shutdown"
TIMEOUT = "timeout"


class Cancelled(Exception):
    """Raised inside an execution when its token is set."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class CancelToken:
    def __init__(self, deadline: float | None = None, *, clock: Callable[[], float] = time.monotonic):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._clock = clock
        self.deadline = deadline
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or self._expired()

    def cancel(self, reason: str) -> bool:
        """Set the token (first reason wins) and run the registered callbacks; False if already set."""
        with self._lock:
            if self._event.is_set():
                return False
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        return True

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` when the token is set (at once if it already is); return an unregister."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._discard(callback)
        callback()
        return lambda: None

    def _discard(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def _expired(self) -> bool:
        if self.deadline is not None and self._clock() >= self.deadline:
            self.cancel(TIMEOUT)
            return True
        return False

    def expire(self) -> bool:
        """Cancel with TIMEOUT if the deadline has passed; return whether the token is set."""
        return self.cancelled

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - self._clock())

    def check(self) -> None:
        """Raise Cancelled if the token is set or its deadline has passed."""
        if self.cancelled:
            raise Cancelled(self.reason or TIMEOUT)

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds` (never past the deadline); raise Cancelled as soon as the token is set."""
        remaining = self.remaining()
        if remaining is not None:
            seconds = min(seconds, remaining)
        self._event.wait(max(0.0, seconds))
        self.check()


class SocketWatch:
    """The sockets of one blocking call that a cancel of its token must shut down, so a read blocked
    on a silent server returns at once instead of at its own timeout. `close()` when the call ends."""

    def __init__(self, token: CancelToken):
        self.token = token
        self._lock = threading.RLock()  # on_cancel runs _shut at once, inside watch, if already set
        self._watched: list[tuple[socket.socket, Callable[[], None]]] = []
        self.expired = False

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the token is set. A dup of the descriptor is kept because TLS
        wrapping detaches the original socket object; shutting the dup shuts the connection."""
        with self._lock:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            self._watched.append((dup, self.token.on_cancel(lambda: self._shut(dup))))
            if self.expired:
                self._shut(dup)

    def expire(self) -> None:
        """The call's time is up: shut every socket it uses, now and later."""
        with self._lock:
            self.expired = True
            for dup, _ in self._watched:
                self._shut(dup)

    def _shut(self, dup: socket.socket) -> None:
        with self._lock:  # never on a dup that close() has already closed
            if dup.fileno() == -1:
                return
            try:
                dup.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected (yet, or any more): nothing to interrupt

    def close(self) -> None:
        with self._lock:
            for dup, unregister in self._watched:
                unregister()
                dup.close()
            self._watched.clear()
