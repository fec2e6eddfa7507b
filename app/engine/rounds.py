"""A daemon thread that runs a round of work every few seconds: the supervisor's and the scheduler's."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from app import logutils
from app.store.base import Store, StoreError

log = logging.getLogger(__name__)


class Rounds:
    def __init__(self, name: str, interval: float, work: Callable[[], object], store: Store):
        self._name = name
        self._interval = interval
        self._work = work
        self._store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run `work()` every `interval` seconds, the first time one interval from now, in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Let the current round finish, run no more, and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._work()
            # The loop must outlive any one failure: log, go on. A store outage repeats the same
            # error every round, so it gets one summarised line, not a traceback per round.
            except StoreError as error:
                log.warning("%s round failed: store unavailable", self._name.removeprefix("ipaas-"),
                            extra=logutils.repeated(str(error), error=str(error)))
            except Exception:
                log.exception("%s round failed", self._name.removeprefix("ipaas-"))
        self._store.close()  # this thread's connection
