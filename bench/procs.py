"""Processes seen through /proc: process groups, their RSS and CPU, the machine's load.

Only the harness's own processes are ever signalled, by pid or by the process group it created."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [2] pgrp, [11] utime,
    [12] stime, [13] cutime, [14] cstime, [21] rss pages. None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            text = file.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _live_where(field: int, value: int) -> list[int]:
    """Live (non-zombie) processes whose stat field number `field` (after the state) equals `value`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[field]) == value:
                found.append(int(entry))
    return sorted(found)


def group_pids(pgrp: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    return _live_where(2, pgrp)


def children(pid: int) -> list[int]:
    return _live_where(1, pid)


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += int(fields[21]) * PAGE
    return total


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(parents.get(pid, []))
    return seen


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes and of their children already reaped."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / TICK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat") as file:
        values = [int(v) for v in file.readline().split()[1:]]
    # user, nice, system, irq, softirq; not idle, iowait, or steal (the hypervisor's, not this VM's)
    return sum(values[i] for i in (0, 1, 2, 5, 6)) / TICK


class CpuWatch:
    """Split the machine's CPU use over an interval into ours (this harness's process tree) and the
    rest: `foreign` cores are other people's work (tests, builds) that skews the figures."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.machine0 = machine_busy_seconds()
        self.ours0 = cpu_seconds(descendants(os.getpid()))
        self.load1 = os.getloadavg()[0]

    def stop(self) -> dict[str, float]:
        elapsed = max(1e-6, time.monotonic() - self.start)
        machine = machine_busy_seconds() - self.machine0
        ours = cpu_seconds(descendants(os.getpid())) - self.ours0
        return {"load1": round(self.load1, 2), "busy_cores": round(machine / elapsed, 2),
                "our_cores": round(ours / elapsed, 2),
                "foreign_cores": round(max(0.0, machine - ours) / elapsed, 2)}


class RssPeak(threading.Thread):
    """Sample the summed RSS of a process group every `interval` s; `stop()` returns the peak in bytes."""

    def __init__(self, pgrp: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-peak")
        self.pgrp, self.interval = pgrp, interval
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes(group_pids(self.pgrp)))
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(5)
        return self.peak


@contextmanager
def split_sampled(port: int, after: float = 2.0) -> Iterator[list[int]]:
    """Yield a list that gets connection_split(port) as it is `after` seconds into the block (start a
    load inside it); the block's end waits for the sample."""
    split: list[int] = []
    probe = threading.Timer(after, lambda: split.extend(connection_split(port)))
    probe.start()
    try:
        yield split
    finally:
        probe.join()


def connection_split(port: int) -> list[int]:
    """How the established connections to 127.0.0.1:port are spread over the processes that hold them,
    largest first (gunicorn's workers race for accept: a long keep-alive load may land unevenly)."""
    try:
        out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    counts: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts.values(), reverse=True)


def own_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of one process (not of its reaped children); None if it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields and fields[0] != "Z" else None


def cmdline(pid: int) -> str:
    """The process's command line (or title, as PostgreSQL sets it), "" if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class CpuTally(threading.Thread):
    """CPU seconds used by a changing set of processes over an interval, e.g. PostgreSQL backends that
    connection pools open and close: `pids()` is sampled every `interval` s and each process counts
    from its first sample (0 for one that appeared after the start, i.e. started within the interval)
    to its last; a process that exits loses at most `interval` s of its CPU. `stop()` returns the total."""

    def __init__(self, pids: Callable[[], Iterable[int]], interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="cpu-tally")
        self._pids, self.interval = pids, interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop_event = threading.Event()
        self._sample(at_start=True)

    def _sample(self, at_start: bool = False) -> None:
        for pid in self._pids():
            seconds = own_cpu_seconds(pid)
            if seconds is not None:
                self._first.setdefault(pid, seconds if at_start else 0.0)
                self._last[pid] = seconds

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._sample()

    def stop(self) -> float:
        self._stop_event.set()
        if self.is_alive():
            self.join(5)
        self._sample()
        return sum(self._last[pid] - self._first[pid] for pid in self._last)
