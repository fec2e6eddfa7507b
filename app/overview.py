"""Read-only summaries for the dashboard, built from existing store queries and the exported metrics."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, Principal
from app.store import Store

#: Executions read at most to count the last hour (newest first), so a busy tenant costs a bounded scan.
COUNT_SCAN_LIMIT = 1000
_SCAN_PAGE = 200
FAILED = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)


@dataclass(frozen=True)
class QueueOverview:
    queue_length: int  # executions waiting for a worker, all processes (ipaas_queue_length)
    workers_busy: int  # worker threads running one, all processes (ipaas_workers_busy)
    since: datetime  # start of the counted window
    by_status: dict[str, int]  # the tenant's executions created since `since`, every status present
    capped: bool  # True when the scan limit was reached before `since`: the counts are a floor
    recent_failures: list[Execution]  # the tenant's newest failed or timed-out executions, newest first


def last_executions(store: Store, principal: Principal, workflow_ids: list[str]) -> dict[str, Execution]:
    """The newest execution of each workflow that has one (one indexed query per workflow)."""
    latest = {}
    for workflow_id in workflow_ids:
        page = store.list_executions(principal.tenant_id, workflow_id=workflow_id, limit=1)
        if page.items:
            latest[workflow_id] = page.items[0]
    return latest


def queue_overview(store: Store, metrics: Metrics, principal: Principal, *, now: datetime,
                   window: timedelta = timedelta(hours=1), failures: int = 10,
                   scan_limit: int = COUNT_SCAN_LIMIT) -> QueueOverview:
    """The queue page's numbers; the counts read at most about `scan_limit` executions (in pages of 200)."""
    since = now - window
    counts = {status.value: 0 for status in ExecutionStatus}
    seen, cursor, capped = 0, None, False
    while True:
        page = store.list_executions(principal.tenant_id, limit=_SCAN_PAGE, cursor=cursor)
        recent = [execution for execution in page.items if execution.created_at >= since]
        for execution in recent:
            counts[execution.status.value] += 1
        seen += len(recent)
        if len(recent) < len(page.items) or page.next_cursor is None:
            break
        if seen >= scan_limit:
            capped = True
            break
        cursor = page.next_cursor
    failed = [execution for status in FAILED
              for execution in store.list_executions(principal.tenant_id, status=status, limit=failures).items]
    failed.sort(key=lambda execution: execution.id, reverse=True)
    return QueueOverview(queue_length=int(metrics.current("ipaas_queue_length")),
                         workers_busy=int(metrics.current("ipaas_workers_busy")), since=since,
                         by_status=counts, capped=capped, recent_failures=failed[:failures])
