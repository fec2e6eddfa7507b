#!/usr/bin/env python3
"""Send exactly N webhook POSTs over C keep-alive connections (stdlib asyncio) and print one JSON line.

    python3 bench/sender.py --url http://127.0.0.1:8080/api/webhooks/wf_... -n 10000 -c 500 \
        [--body FILE] [--ids-out FILE] [--timeout 120] [--deadline 600] [--burst 1000 --retry-503]

wrk has no request count limit, and stopping its threads after N responses still leaves requests
in flight that the server runs but nobody counted; this sender hands out exactly N tickets, so
every request it sends is answered and counted (or reported as an error).

--burst B: bursts of B webhooks a second (B sent as fast as the connections allow, then a pause until the
next second; a burst not done by then runs into the next one's). --retry-503: a webhook answered 503 is
sent again after the answer's Retry-After (seconds; 1 if absent) until it is accepted or the deadline
passes, so that every webhook is eventually accepted (backpressure); each 503 is counted in "status".

Output: {"n", "c", "sent", "status": {"202": n, "503": n, ...}, "error_codes": {"503 queue_full": n, ...},
 "errors", "error_kinds", "retries", "t_start", "t_end", "p50_ms", "p99_ms", "max_ms", "cpu_s"}; with
--ids-out the execution ids of the 202s, one a line."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import time
from collections import Counter
from urllib.parse import urlsplit

EXECUTION_ID = re.compile(rb'"execution_id"\s*:\s*"([^"]+)"')
ERROR_CODE = re.compile(rb'"code"\s*:\s*"([^"]+)"')
DEFAULT_BODY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "payload.json")


class Run:
    def __init__(self, n: int, burst: int | None = None, retry_503: bool = False) -> None:
        self.left = n
        self.burst, self.retry_503 = burst, retry_503
        self.taken = self.retries = 0
        self.t0 = time.monotonic()
        self.status: Counter[int] = Counter()
        self.codes: Counter[str] = Counter()  # "503 queue_full", "503 unavailable", ...
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.ids: list[bytes] = []

    async def ticket(self) -> bool:
        while self.left > 0:
            elapsed = time.monotonic() - self.t0
            if self.burst is None or self.taken < self.burst * (int(elapsed) + 1):
                self.left -= 1
                self.taken += 1
                return True
            await asyncio.sleep(int(elapsed) + 1 - elapsed)  # this second's burst is out: the next one
        return False


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool, float]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close, retry_after = 0, False, 1.0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
        elif name == "retry-after" and value.strip().isdigit():
            retry_after = float(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body, close, retry_after


async def _connection(run: Run, host: str, port: int, request: bytes, timeout: float) -> None:
    reader = writer = None
    try:
        retry = False
        while retry or await run.ticket():
            retry = False
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                started = time.perf_counter()
                writer.write(request)
                status, body, close, retry_after = await asyncio.wait_for(_read_response(reader), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                # The request may or may not have reached the server: reported, never retried.
                run.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            run.latencies.append(time.perf_counter() - started)
            run.status[status] += 1
            if status == 202:
                found = EXECUTION_ID.search(body)
                if found:
                    run.ids.append(found.group(1))
            else:
                found = ERROR_CODE.search(body)
                run.codes[f"{status} {found.group(1).decode() if found else '?'}"] += 1
            if close:
                writer.close()
                reader = writer = None
            if status == 503 and run.retry_503:
                run.retries += 1
                retry = True
                await asyncio.sleep(retry_after)
    finally:
        if writer is not None:
            writer.close()


async def send(url: str, n: int, c: int, body: bytes, timeout: float, deadline: float, burst: int | None = None,
               retry_503: bool = False) -> tuple[Run, float, float]:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"X-Event-Type: order.created\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    run = Run(n, burst, retry_503)
    started = time.time()
    tasks = [asyncio.create_task(_connection(run, host, port, request, timeout)) for _ in range(c)]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
        run.errors["deadline"] += 1
    for task in done:
        if task.exception() is not None:
            run.errors[type(task.exception()).__name__] += 1
    return run, started, time.time()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("-n", type=int, required=True, help="requests in all")
    parser.add_argument("-c", type=int, default=50, help="concurrent connections")
    parser.add_argument("--body", default=DEFAULT_BODY)
    parser.add_argument("--ids-out")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole run")
    parser.add_argument("--burst", type=int, help="webhooks per one-second burst (default: no pause)")
    parser.add_argument("--retry-503", action="store_true", help="send a webhook answered 503 again after "
                                                                 "its Retry-After, until accepted")
    args = parser.parse_args()
    with open(args.body, "rb") as file:
        body = file.read()
    run, started, ended = asyncio.run(send(args.url, args.n, max(1, min(args.c, args.n)), body,
                                           args.timeout, args.deadline, args.burst, args.retry_503))
    if args.ids_out:
        with open(args.ids_out, "wb") as file:
            file.write(b"".join(i + b"\n" for i in run.ids))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    print(json.dumps({
        "n": args.n, "c": args.c, "sent": args.n - run.left,
        "status": {str(k): v for k, v in sorted(run.status.items())}, "error_codes": dict(run.codes),
        "errors": sum(run.errors.values()), "error_kinds": dict(run.errors), "ids": len(run.ids),
        "retries": run.retries,
        "t_start": started, "t_end": ended,
        "p50_ms": ms(percentile(run.latencies, 0.5)), "p99_ms": ms(percentile(run.latencies, 0.99)),
        "max_ms": ms(max(run.latencies, default=None)),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }), flush=True)


if __name__ == "__main__":
    main()
