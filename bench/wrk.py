"""Drive wrk with bench/post.lua and return its summary as a dict (rates per second, latencies in ms)."""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "post.lua"
PAYLOAD = BENCH / "payload.json"


def run(url: str, *, connections: int = 50, seconds: float = 15, threads: int = 2, timeout: int = 30,
        count_status: bool = True, delay_ms: float | None = None, lua: Path = LUA) -> dict:
    """Run `wrk -t threads -c connections -d seconds` once; bounded by seconds + timeout + 30."""
    env = dict(os.environ, WRK_BODY_FILE=str(PAYLOAD), WRK_STATUS="1" if count_status else "0")
    if delay_ms:
        env["WRK_DELAY_MS"] = str(int(delay_ms))
    threads = max(1, min(threads, connections))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", f"--timeout={timeout}s",
               "-s", str(lua), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + timeout + 30)
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.M)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")
    raw = json.loads(found.group(1))
    duration = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    # Without the response() callback wrk only knows "not 2xx/3xx" (errors.status).
    accepted = raw["s202"] if raw["counted"] else raw["requests"] - raw["err_status"]
    return {
        "t_start": started, "t_end": ended, "duration_s": round(duration, 3), "connections": connections,
        "requests": raw["requests"], "accepted": accepted, "s503": raw["s503"], "s429": raw["s429"],
        "other_status": raw["sother"] + raw["s2xx"] if raw["counted"] else raw["err_status"],
        "socket_errors": errors, "req_per_s": round(raw["requests"] / duration, 1),
        "accepted_per_s": round(accepted / duration, 1),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000, "max_ms": raw["lat_max_us"] / 1000,
        "wrk_cpu_cores": round((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / duration, 2),
    }
