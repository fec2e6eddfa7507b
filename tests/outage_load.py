"""The real-fault outage tests' scenario (a full disk, a database restart): `run_outage` starts the real
service under gunicorn, drives webhooks (WebhookLoad), breaks the store for `down_for` s, mends it, and
asserts what must hold (check_outage); it returns the figures for bench/RESULTS.md."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

from pathlib import Path
from typing import Callable

from tests.receiver import Receiver, Reply
from tests.serverproc import (
    TERMINAL,
    GunicornServer,
    create_http_workflow,
    create_user,
    delivery_counts,
    send_webhook,
    wait_for_executions,
    wait_until,
)

SENDERS = 4
SENDS_PER_SENDER = 3000  # an upper bound only: a test stops its senders when it is done
# README "Store outages": parked outcomes and waiting claims are retried within ~1.25 s of the store
# writing again; the rest is the engine working through what was queued meanwhile.
DRAIN_BOUND = 5.0
# One line per kind of store error and process per 10 s, plus its summary: dozens, not thousands.
MAX_ERROR_LINES = 60


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when it came
    status: int
    execution_id: str | None
    retry_after: str | None


class WebhookLoad:
    """SENDERS threads posting webhooks in a loop, and one polling /readyz every 0.1 s, until exit."""

    def __init__(self, server: GunicornServer, workflow: str) -> None:
        self._server, self._workflow = server, workflow
        self._stop = threading.Event()
        self.answers: list[Answer] = []
        self.readyz: list[tuple[float, int]] = []  # (time.monotonic() of the answer, its status)
        self._threads = [threading.Thread(target=self._send) for _ in range(SENDERS)]
        self._threads.append(threading.Thread(target=self._poll_readyz))

    def __enter__(self) -> WebhookLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _send(self) -> None:
        for _ in range(SENDS_PER_SENDER):
            if self._stop.is_set():
                return
            response = send_webhook(self._server, self._workflow, timeout=30)
            execution_id = response.json().get("execution_id") if response.status == 202 else None
            self.answers.append(Answer(time.monotonic(), response.status, execution_id,
                                       response.headers.get("Retry-After")))
            time.sleep(0.005)

    def _poll_readyz(self) -> None:
        while not self._stop.wait(0.1):
            status = self._server.request("GET", "/readyz", timeout=30).status
            self.readyz.append((time.monotonic(), status))  # when the answer came

    def accepted(self) -> list[str]:
        return [answer.execution_id for answer in self.answers if answer.status == 202]

    def wait_accepted(self, count: int, *, after: float = 0.0, timeout: float = 10.0) -> None:
        wait_until(lambda: sum(a.status == 202 and a.at > after for a in self.answers) >= count, timeout,
                   f"fewer than {count} webhooks accepted")

    def wait_readyz(self, status: int, *, after: float, timeout: float) -> None:
        wait_until(lambda: any(t > after and s == status for t, s in self.readyz), timeout,
                   f"/readyz never answered {status}")


def wait_terminal(server: GunicornServer, auth: Mapping[str, str], ids: list[str], timeout: float) -> None:
    """Poll until every execution in `ids` is terminal; a 503 (the store not reachable yet) is a "not yet"."""
    waiting = set(ids)

    def settled() -> bool:
        for execution_id in sorted(waiting):
            response = server.request("GET", f"/api/executions/{execution_id}", headers=auth)
            if response.status == 503:
                return False
            assert response.status == 200, (response.status, response.body)
            if response.json()["status"] in TERMINAL:
                waiting.discard(execution_id)
        return not waiting

    wait_until(settled, timeout, f"executions not terminal: {waiting}")


def run_outage(tmp_path: Path, receiver: Receiver, env: Mapping[str, str], *, down_for: float,
               break_store: Callable[[], None], mend_store: Callable[[], None],
               drain_bound: float = DRAIN_BOUND) -> dict[str, Any]:
    """Two gunicorn processes (4 engine workers each) on `env`'s store, webhooks to a workflow whose
    receiver answers in 10 ms; after 50 accepted, `break_store()`, `down_for` s, `mend_store()`. Assert
    that every execution accepted so far is terminal within `drain_bound` s of the mend, then
    check_outage; return its figures and how long the drain took."""
    receiver.respond("/hook", Reply(delay=0.01))
    env = {"IPAAS_ALLOW_PRIVATE_NETWORKS": "true", "IPAAS_WORKERS": "4", "IPAAS_GRACEFUL_TIMEOUT": "5", **env}
    user = create_user(tmp_path, "ops@example.com", "acme", env=env)
    with GunicornServer(env, tmp_path, processes=2, threads=8) as server:
        workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))
        with WebhookLoad(server, workflow) as load:
            load.wait_accepted(50)
            down_at = time.monotonic()
            break_store()
            load.wait_readyz(503, after=down_at, timeout=down_for)
            time.sleep(max(0.0, down_at + down_for - time.monotonic()))  # the outage itself: no event to wait for
            mend_store()
            up_at = time.monotonic()
            before = load.accepted()
            wait_terminal(server, user.auth, before, timeout=drain_bound)
            drained_in = time.monotonic() - up_at
            load.wait_readyz(200, after=up_at, timeout=drain_bound)
            load.wait_accepted(20, after=up_at)  # and webhooks are accepted again
        figures = check_outage(server, user.auth, receiver, load, down_at=down_at, up_at=up_at,
                               drain_bound=drain_bound)
    return {"accepted_before_recovery": len(before), "drained_in_s": round(drained_in, 2),
            "drain_bound_s": drain_bound, **figures}


def check_outage(server: GunicornServer, auth: Mapping[str, str], receiver: Receiver, load: WebhookLoad, *,
                 down_at: float, up_at: float, drain_bound: float = DRAIN_BOUND) -> dict[str, Any]:
    """Assert what an outage from `down_at` to `up_at` (time.monotonic()) must leave, once the load has
    stopped: every 202 succeeded, each action received at most once per recorded attempt, 503s with
    Retry-After and no other error, readyz 503 while down and 200 after, no traceback, few error lines.
    Return the figures for a report."""
    accepted = load.accepted()
    finished = wait_for_executions(server, auth, accepted, timeout=drain_bound)
    statuses = Counter(answer.status for answer in load.answers)
    assert set(statuses) <= {202, 503} and statuses[503] > 0, statuses
    assert all(a.retry_after and int(a.retry_after) >= 1 for a in load.answers if a.status == 503)
    assert {execution["status"] for execution in finished.values()} == {"succeeded"}
    delivered = delivery_counts(receiver)
    assert set(delivered) == set(accepted)
    assert all(delivered[i] <= finished[i]["attempts"] for i in accepted)  # at most once per recorded attempt
    during = [status for at, status in load.readyz if down_at + 2 < at < up_at]
    assert during and Counter(during).most_common(1)[0][0] == 503, Counter(during)
    assert server.request("GET", "/readyz").status == 200

    logs = server.logs()
    assert [line for line in logs if "exc_info" in line] == []
    refused = [line for line in logs if line["message"] == "request" and line["level"] == "warning"]
    assert all(line["data"]["error"].startswith("store unavailable: ") for line in refused)
    errors = Counter(line["message"] for line in logs if line["level"] in ("warning", "error")
                     and line["message"] != "request" and not line["message"].startswith("execution "))
    assert sum(errors.values()) < MAX_ERROR_LINES, errors
    metrics = server.request("GET", "/metrics").body.decode()
    assert "ipaas_outcomes_pending 0.0" in metrics and 'ipaas_store_errors_total{operation="request"}' in metrics
    return {"accepted": statuses[202], "refused": statuses[503], "refused_lines": len(refused),
            "duplicates": sum(count - 1 for count in delivered.values()),
            "readyz_503_while_down": f"{during.count(503)} of {len(during)}",
            "error_lines": sum(errors.values()), "tracebacks": 0}
