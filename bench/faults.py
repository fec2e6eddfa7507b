"""Scenarios 4 and 5: cancelling an action blocked on a silent server, and recovery after kill -9.

cancel: a workflow whose slack_message goes to the receiver's silent path (read, never answered).
  For each of `cancels` executions: webhook; wait until the receiver holds its request (the action
  is then blocked reading the answer); t0; POST /api/executions/ID/cancel; poll GET every 10 ms
  until status `cancelled` -> latency. Also when the receiver saw the blocked connection close
  (the worker let go of the socket), and ipaas_workers_busy on /metrics afterwards (0: the workers
  are free again). The cancel and the polls land on either gunicorn process, like a user's would.

recovery: a server with IPAAS_QUEUE_SIZE=1000 (the default 100 cannot hold 1,000 pending), the
  receiver in hold mode (requests read, never answered, not counted; IPAAS_HTTP_TIMEOUT=600 so the
  held actions do not time out and retry meanwhile): 1,000 webhooks -> 202 and
  all 1,000 executions queued or running; kill -9 of the whole gunicorn process group; the receiver
  back to normal; t0 = the restart command (production config again, queue 100): time until
  /healthz answers, the receiver's first delivery, and all 1,000 terminal (database polled every
  50 ms; how many succeeded is recorded). The ones running at the kill are run again
  (at-least-once), so the receiver must count exactly 1,000 unique deliveries after the restart."""
from __future__ import annotations

import re
import time

from context import Context
from procs import CpuWatch
from service import PAYLOAD, Service, call
from stats import percentile
from storm import send, wait_terminal

POLL = 0.01
RECOVERY_LIMIT = 120.0
HOLDING = {"IPAAS_HTTP_TIMEOUT": "600", "IPAAS_JOB_TIMEOUT": "900"}


def _poll(predicate, limit: float, interval: float = POLL):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def _workers_busy(server: Service) -> float | None:
    status, text = call(server.port, "GET", "/metrics")
    if status != 200:
        return None
    found = re.search(r"^ipaas_workers_busy(?:\{[^}]*\})? ([0-9.e+-]+)$", text or "", re.M)
    return float(found.group(1)) if found else None


def cancel(ctx: Context) -> list[dict]:
    rx = ctx.receiver
    server = Service(ctx.workdir, name="cancel").start()
    body = PAYLOAD.read_bytes()
    records = []
    try:
        workflow = server.create_workflow(rx.url("/silent/slack"))
        for index in range(ctx.runs):
            ctx.log(f"cancel run {index + 1}/{ctx.runs}: {ctx.timing.cancels} cancellations")
            settled = ctx.settle()
            cpu = CpuWatch()
            latencies, closed, api, failures = [], [], [], []
            for _ in range(ctx.timing.cancels):
                status, answer = call(server.port, "POST", f"/api/webhooks/{workflow}", body)
                if status != 202:
                    failures.append(f"webhook {status}")
                    continue
                execution = answer["execution_id"]
                if not _poll(lambda: rx.get(f"/_silent?id={execution}").get("arrived"), 10):
                    failures.append("action never reached the receiver")
                    continue
                started = time.time()
                status, _ = server.api("POST", f"/api/executions/{execution}/cancel")
                api.append(time.time() - started)
                if status != 202:
                    failures.append(f"cancel {status}")
                    continue
                done = _poll(lambda: server.api("GET", f"/api/executions/{execution}")[1]["status"] == "cancelled"
                             and time.time(), 10)
                if not done:
                    failures.append("never cancelled within 10 s")
                    continue
                latencies.append(done - started)
                gone = _poll(lambda: rx.get(f"/_silent?id={execution}").get("closed"), 10)
                if gone:
                    closed.append(gone - started)
            busy = _poll(lambda: _workers_busy(server) == 0, 3, 0.1)
            ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
            record = ctx.save({
                "scenario": "cancel", "run": index, "settle_busy": settled, "cpu": cpu.stop(),
                "n": len(latencies), "failures": failures,
                "p50_ms": ms(percentile(latencies, 0.5)), "max_ms": ms(max(latencies, default=None)),
                "closed_p50_ms": ms(percentile(closed, 0.5)), "closed_max_ms": ms(max(closed, default=None)),
                "api_p50_ms": ms(percentile(api, 0.5)), "all_ms": [ms(v) for v in latencies],
                "workers_busy_after": 0 if busy else _workers_busy(server),
            })
            ctx.log(f"  cancelled in p50 {record['p50_ms']} ms, max {record['max_ms']} ms; socket closed p50 "
                    f"{record['closed_p50_ms']} ms; busy workers after {record['workers_busy_after']};"
                    f" failures {failures}")
            records.append(record)
    finally:
        server.stop()
    return records


def recovery(ctx: Context) -> list[dict]:
    rx, pending = ctx.receiver, ctx.timing.pending
    records = []
    for index in range(ctx.runs):
        ctx.log(f"recovery run {index + 1}/{ctx.runs}: {pending} pending, kill -9, restart")
        # While the receiver holds requests the running actions must neither time out nor retry (nor
        # open the host's circuit): a long action timeout for this first server only.
        server = Service(ctx.workdir, {"IPAAS_QUEUE_SIZE": str(pending)}, name=f"recovery-{index}").start(HOLDING)
        try:
            workflow = server.create_workflow(rx.url("/hook/slack"))
            rx.reset()
            settled = ctx.settle()
            rx.hold(True)
            sent = send(server.webhook_url(workflow), pending, 50)
            counts = server.counts(workflow)
            server.kill9()
            rx.hold(False)
            rx.reset()
            cpu = CpuWatch()
            started = time.time()
            server.start({"IPAAS_QUEUE_SIZE": "100"})
            finished, _ = wait_terminal(server, workflow, sent["status"].get("202", 0), RECOVERY_LIMIT,
                                        interval=0.05)
            rx.wait_quiet(quiet=1.0, limit=30)
            stats, after = rx.stats(), server.counts(workflow)
            record = ctx.save({
                "scenario": "recovery", "run": index, "settle_busy": settled, "cpu": cpu.stop(),
                "s202": sent["status"].get("202", 0),
                "pending": counts.get("queued", 0) + counts.get("running", 0), "at_kill": counts,
                "ready_s": round(server.ready_at - started, 3),
                "first_s": round(stats["first_ts"] - started, 3) if stats["first_ts"] else None,
                "all_s": round(finished - started, 3) if finished else None,
                "succeeded": after.get("succeeded", 0), "after": after,
                "delivered": stats["unique"], "duplicates": stats["duplicates"],
            })
            ctx.log(f"  pending {record['pending']} ({counts}); ready {record['ready_s']} s, first delivery "
                    f"{record['first_s']} s, all terminal {record['all_s']} s ({after}); "
                    f"delivered {record['delivered']}"
                    f" dup {record['duplicates']}")
            records.append(record)
        finally:
            server.stop()
    return records
