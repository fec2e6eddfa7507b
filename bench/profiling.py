#!/usr/bin/env python3
"""Profile the service under load with py-spy and rank where the webhook path and the engine spend.

    .venv/bin/python bench/profiling.py [--mode e2e|stalled] [--seconds 10] [--rate 50] [--native] [--root DIR]

Starts the receiver and the service as run.py does, drives wrk -c50 at it, and records every gunicorn
worker with py-spy (`record --format raw --threads`, collapsed stacks one per line, loadable in
speedscope.app): once with --idle (every thread every tick: wall time, waits included), once with
--gil (only the thread holding the GIL: CPU spent in Python) and, with --native, once with --native --idle
(the C frames under the Python ones: SQLite's busy handler sleeping, fdatasync). The raw files go to
bench/out/.

The report splits the samples by thread: gunicorn's request threads (ThreadPoolExecutor-*) while
inside ThreadWorker.handle are the webhook path, gunicorn's MainThread is its event loop, the
engine's ipaas-worker_* threads while inside BoundedExecutor._work are the engine path. For each it
prints the share of samples in which a function is on the stack (inclusive) and the lines where the
samples end in project or library code (where the time actually goes: a line doing
conn.execute("COMMIT") waits on fsync, one doing BEGIN IMMEDIATE waits for the write lock).

  --mode e2e      the production pipeline at saturation (receiver answers at once)
  --mode stalled  the request path alone (queue 20000, the receiver never answers, engine blocked);
                  caveat: the supervisor's recovery round then takes ~20,000 free slots once a second,
                  which shows up as slot waits in the request threads
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
import service  # noqa: E402
from service import BENCH, Receiver, Service, workdir  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
LINE = re.compile(r"^thread \((\d+)\): ([^;]*);(.*) (\d+)$")
FRAME = re.compile(r"^(.*) \(([^:()]+)(?::(\d+))?\)$")
ROLES = (
    ("webhook path (gunicorn request threads, in a request)", "ThreadPoolExecutor", "ThreadWorker.handle"),
    ("gunicorn event loop (MainThread)", "MainThread", ""),
    ("engine path (ipaas-worker threads, running a job)", "ipaas-worker", "BoundedExecutor._work"),
    ("supervisor", "ipaas-supervisor", ""),
    ("other threads", "", ""),
)


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    samples = []
    for line in path.read_text().splitlines():
        found = LINE.match(line)
        if found:
            samples.append((found.group(2), found.group(3).split(";"), int(found.group(4))))
    return samples


def role_of(thread: str, frames: list[str]) -> str | None:
    for name, prefix, marker in ROLES:
        if thread.startswith(prefix):
            if marker and not any(frame.startswith(marker + " ") for frame in frames):
                return None  # an idle pool thread: waiting for work, not on the path
            return name
    return ROLES[-1][0]


def _strip_line(frame: str) -> str:
    found = FRAME.match(frame)
    return f"{found.group(1)} ({found.group(2)})" if found else frame


def _interesting(frame: str) -> bool:
    return not any(skip in frame for skip in ("threading.py", "concurrent/futures", "<module>"))


def report(samples: list[tuple[str, list[str], int]], title: str, top: int) -> str:
    by_role: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for thread, frames, count in samples:
        role = role_of(thread, frames)
        if role:
            by_role[role].append((frames, count))
    total = sum(count for _, _, count in samples)
    out = [f"### {title}: {total} samples"]
    for name, _, _ in ROLES:
        rows = by_role.get(name)
        if not rows:
            continue
        n = sum(count for _, count in rows)
        inclusive: collections.Counter[str] = collections.Counter()
        leaves: collections.Counter[str] = collections.Counter()
        for frames, count in rows:
            for frame in {_strip_line(f) for f in frames if _interesting(f)}:
                inclusive[frame] += count
            leaves[frames[-1]] += count
        out.append(f"\n**{name}**: {n} samples ({n / total:.0%} of all)\n")
        out.append("| inclusive % | function (on the stack) |\n|---|---|")
        out += [f"| {c / n:.1%} | `{f}` |" for f, c in inclusive.most_common(top * 2)
                if not f.startswith(("Thread.", "_worker", "_WorkItem"))][:top]
        out.append("\n| self % | where the samples end (leaf frame) |\n|---|---|")
        out += [f"| {c / n:.1%} | `{f}` |" for f, c in leaves.most_common(top)]
    return "\n".join(out)


def _cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of these processes, from /proc/PID/stat."""
    user = system = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        user += int(fields[11]) / procs.TICK
        system += int(fields[12]) / procs.TICK
    return user, system


def main() -> int:
    parser = argparse.ArgumentParser(description="py-spy profile of the service under wrk load")
    parser.add_argument("--mode", choices=("e2e", "stalled"), default="e2e")
    parser.add_argument("--seconds", type=int, default=10, help="length of each py-spy recording")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--root", help="project tree to run (default: the one holding bench/)")
    parser.add_argument("--native", action="store_true", help="also a recording with --native --idle: wall time "
                                                              "with the C frames (SQLite, libc) under the Python ones")
    args = parser.parse_args()
    if args.root:
        service.APP_ROOT = Path(args.root).resolve()
    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    directory = workdir()
    receiver = Receiver(directory).start()
    env = {"IPAAS_QUEUE_SIZE": "20000"} if args.mode == "stalled" else {}
    server = Service(directory, env, name="profile").start()
    load = None
    try:
        target = "/silent/slack" if args.mode == "stalled" else "/hook/slack"
        url = server.webhook_url(server.create_workflow(receiver.url(target)))
        kinds = ["idle", "gil"] + (["native"] if args.native else [])
        length = 3 + len(kinds) * (args.seconds + 2)
        load = subprocess.Popen(["wrk", "-t2", "-c50", f"-d{length}s", "-s", str(BENCH / "post.lua"), url],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={"WRK_BODY_FILE": str(BENCH / "payload.json"), "PATH": "/usr/bin:/bin"})
        time.sleep(3)
        reports = []
        cpu0 = _cpu_split(server.worker_pids())
        for kind in kinds:
            files = []
            recorders = []
            flags = ["--native", "--idle"] if kind == "native" else [f"--{kind}"]
            for pid in server.worker_pids():
                path = out / f"profile-{stamp}-{args.mode}-{kind}-{pid}.txt"
                files.append(path)
                recorders.append(subprocess.Popen(
                    [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(args.seconds), "--rate",
                     str(args.rate), "--format", "raw", "--threads", *flags, "--output", str(path)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for recorder in recorders:
                recorder.wait(args.seconds + 60)
            samples = [s for path in files if path.exists() for s in parse(path)]
            what = {"idle": "wall time, every thread (--idle)", "gil": "CPU: the GIL holder (--gil)",
                    "native": "wall time with C frames (--native --idle)"}[kind]
            reports.append(report(samples, f"{args.mode}, {what}", args.top))
            print(f"raw stacks: {', '.join(str(p.relative_to(service.ROOT)) for p in files)}", file=sys.stderr)
        cpu1 = _cpu_split(server.worker_pids())
        summary = load.communicate(timeout=length + 60)[0]
        found = re.search(r'BENCH_JSON (\{.*\})', summary)
        print(f"## py-spy profile, mode {args.mode}, {args.seconds} s per recording at {args.rate} Hz\n")
        print(f"wrk: {found.group(1) if found else summary[-500:]}\n")
        seconds = len(kinds) * args.seconds
        print(f"gunicorn workers' CPU during the recordings: user {(cpu1[0] - cpu0[0]) / seconds:.2f} cores, "
              f"system {(cpu1[1] - cpu0[1]) / seconds:.2f} cores (py-spy pauses them to sample: a few % more)\n")
        print("\n\n".join(reports))
    finally:
        if load and load.poll() is None:
            load.kill()
        server.stop()
        receiver.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
