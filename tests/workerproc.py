"""Run `flask --app wsgi worker` (distributed mode) in tests, beside a GunicornServer on the same store.

    with WorkerCommand({"IPAAS_BROKER_URL": redis_url}, tmp_path, processes=2) as workers:
        workers.children()          # the worker processes' pids
        os.kill(workers.children()[0], signal.SIGKILL)

Each command runs in its own process group, logs to files under tmp_path, and is killed with its
children at exit even if a test fails."""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from tests.serverproc import ROOT, _proc_table, service_env, wait_until

_LIVE: set["WorkerCommand"] = set()


class WorkerCommand:
    def __init__(self, env: Mapping[str, str | None], tmp_path: Path, *, processes: int = 2, threads: int = 4,
                 args: tuple[str, ...] = ()):
        self.tmp_path = Path(tmp_path)
        self.processes, self.threads, self.args = processes, threads, args
        # TMPDIR: the fleet's metrics directory (app/fleet.py, mkdtemp) goes under tmp_path, so a fleet a test
        # SIGKILLs, which cannot remove it, leaves nothing in /tmp.
        self.env = service_env(self.tmp_path, {"PROMETHEUS_MULTIPROC_DIR": None, "TMPDIR": str(self.tmp_path), **env})
        run = 1
        while (self.tmp_path / f"worker-{run}.stderr").exists():
            run += 1
        self.stderr_path = self.tmp_path / f"worker-{run}.stderr"
        self.stderr_path.touch()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> WorkerCommand:
        """Launch the command and wait until every worker process has logged that it started."""
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--processes", str(self.processes),
                   "--threads", str(self.threads), *self.args]
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=stderr, stderr=stderr, start_new_session=True)
        _LIVE.add(self)
        wait_until(lambda: self.started() >= self.processes or self.proc.poll() is not None, timeout,
                   "worker processes never started")
        if self.proc.poll() is not None:
            raise AssertionError(f"worker command exited with {self.proc.returncode}:\n{self.log_tail()}")
        return self

    def __enter__(self) -> WorkerCommand:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.kill9()

    def logs(self) -> list[dict[str, Any]]:
        records = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def started(self) -> int:
        return sum(1 for record in self.logs() if record.get("message") == "worker started")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])

    def children(self) -> list[int]:
        """The live worker processes (the command's children)."""
        return sorted(pid for pid, state, ppid, _ in _proc_table() if ppid == self.proc.pid and state != "Z")

    def group(self) -> list[int]:
        return sorted(pid for pid, state, _, pgrp in _proc_table() if pgrp == self.proc.pid and state != "Z")

    def terminate(self, timeout: float) -> int:
        """SIGTERM the command and return its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill9()

    def kill9(self) -> None:
        """SIGKILL the whole process group (command and children)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        wait_until(lambda: not self.group(), 10.0, "worker processes survive SIGKILL")
        _LIVE.discard(self)


@atexit.register
def _kill_leftovers() -> None:
    for command in list(_LIVE):
        command.kill9()
