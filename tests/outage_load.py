"""Webhook load and the checks of the real-fault outage tests (a full disk, a database restart).

    with WebhookLoad(server, workflow) as load:
        load.wait_accepted(50)
        ... break the store, mend it ...
    figures = check_outage(server, auth, receiver, load, down_at=..., up_at=...)
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

from tests.receiver import Receiver
from tests.serverproc import (
    TERMINAL,
    GunicornServer,
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


def check_outage(server: GunicornServer, auth: Mapping[str, str], receiver: Receiver, load: WebhookLoad, *,
                 down_at: float, up_at: float) -> dict[str, Any]:
    """Assert what an outage from `down_at` to `up_at` (time.monotonic()) must leave, once the load has
    stopped: every 202 succeeded, each action received at most once per recorded attempt, 503s with
    Retry-After and no other error, readyz 503 while down and 200 after, no traceback, few error lines.
    Return the figures for a report."""
    accepted = load.accepted()
    finished = wait_for_executions(server, auth, accepted, timeout=DRAIN_BOUND)
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
