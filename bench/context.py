"""What every scenario shares: the options, a work directory, the receiver, the JSON-lines output."""
from __future__ import annotations

import json
import sys
import time

from procs import machine_busy_seconds
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import Receiver


@dataclass
class Timing:
    """Durations in seconds; quick mode shortens every one of them."""
    ingest: float = 15
    warmup: float = 3
    e2e: float = 60
    e2e_skip: float = 5  # first seconds of an e2e run left out of the sustained rate (queue filling)
    paced: float = 15
    storm_requests: int = 10_000
    storm_connections: int = 500
    cancels: int = 10
    pending: int = 1_000
    sustained: int = 100_000  # webhooks of the sustained distributed run
    burst: int = 1_000  # webhooks per one-second burst
    sustained_limit: float = 1_500  # seconds the sustained run may send for
    sustained_queue: int = 1_000  # its IPAAS_QUEUE_SIZE (the shared backlog)

    @classmethod
    def quick(cls) -> Timing:
        return cls(ingest=5, warmup=1, e2e=15, e2e_skip=3, paced=6, storm_requests=2_000, cancels=5, pending=1_000,
                   sustained=5_000)


@dataclass
class Context:
    runs: int
    timing: Timing
    workdir: Path
    out: Path
    receiver: Receiver
    e2e_rate: float | None = None  # executions/s measured by the e2e scenario (the storm's "ideal")
    settle_limit: float = 0.0  # seconds settle() may wait for other people's load to drop
    records: list[dict[str, Any]] = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def settle(self, below: float = 0.3) -> float:
        """Before a measurement: wait (at most settle_limit s) until the machine is nearly idle, i.e.
        other people's tests and builds use less than `below` cores over 1 s (ours are idle now).
        Returns the cores in use at the end; the figures of a busy machine are flagged, not hidden."""
        deadline = time.monotonic() + self.settle_limit
        said = 0.0
        while True:
            before = machine_busy_seconds()
            time.sleep(1.0)
            busy = machine_busy_seconds() - before
            if busy < below or time.monotonic() >= deadline:
                if busy >= below and self.settle_limit:
                    self.log(f"  machine still busy ({busy:.2f} cores in use by others): measuring anyway")
                return round(busy, 2)
            if time.monotonic() - said >= 10:
                self.log(f"  waiting for the machine to settle: {busy:.2f} cores in use by others")
                said = time.monotonic()

    def save(self, record: dict[str, Any]) -> dict[str, Any]:
        record.setdefault("ts", time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.records.append(record)
        with open(self.out, "a") as file:
            file.write(json.dumps(record) + "\n")
        return record
