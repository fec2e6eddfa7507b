"""One thread that runs callbacks at deadlines: how an HTTP attempt is bounded as a whole.

A socket timeout bounds each read, not an answer: a server that sends one byte every half second
never trips it. The HttpClient instead asks the watchdog to shut the attempt's sockets at its
deadline. One thread with a heap of deadlines serves every request, so a send costs a heap push and
no thread of its own; the thread starts with the first deadline (after gunicorn forked)."""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable

_Entry = list  # [deadline, sequence, callback or None once cancelled]


class Watchdog:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def at(self, deadline: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` (in the watchdog's thread) at `deadline` (clock seconds); return a cancel."""
        entry: _Entry = [deadline, next(self._order), callback]
        with self._cond:
            if self._closed:
                raise RuntimeError("the watchdog is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        return lambda: self._cancel(entry)

    def _cancel(self, entry: _Entry) -> None:
        with self._cond:
            entry[2] = None  # left in the heap, dropped when it comes to the top

    def _next_due(self) -> Callable[[], None] | None:
        """Wait for the earliest live deadline and pop its callback; None once closed."""
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if self._heap and self._heap[0][0] <= self._clock():
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(self._heap[0][0] - self._clock() if self._heap else None)
            return None

    def _run(self) -> None:
        while (callback := self._next_due()) is not None:
            callback()  # shuts sockets down: nothing here raises but a bug, which should be seen

    def close(self) -> None:
        """Stop the thread; pending callbacks never run."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
