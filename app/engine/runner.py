"""Run one execution in a worker thread: claim it, run its steps (engine/steps.py: templates, conditions,
connectors with retries, a checkpoint per step), and record ONE outcome in the store."""
from __future__ import annotations

import logging
import random
import time
from datetime import datetime
from typing import Any, Callable, TypeVar

from app import logutils
from app.engine.cancel import SHUTDOWN, TIMEOUT, Cancelled, CancelToken
from app.engine.credentials import CredentialResolver
from app.engine.http import HttpClient
from app.engine.steps import Outcome, RetryPolicy, Sleep, StepRunner, clean
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, StepRecord, utcnow
from app.store.base import Store, StoreError
from app.tracing import NO_TRACING, Tracing

__all__ = ["Outcome", "RetryPolicy", "Runner", "Sleep"]

log = logging.getLogger(__name__)

# Claims and outcomes are worth waiting for: an execution whose claim or outcome is not recorded
# stays under this live process until it restarts, and an action that ran is not to run again.
STORE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
T = TypeVar("T")


def _patiently(write: Callable[[], T], what: str) -> T:
    """Run a store write, retrying while the store is unavailable; StoreError once patience runs out."""
    for delay in STORE_RETRY_DELAYS:
        try:
            return write()
        except StoreError:
            log.warning(f"store unavailable, retrying to record {what}", extra={"data": {"delay_s": delay}})
            time.sleep(delay)
    return write()


_MESSAGES = {
    ExecutionStatus.SUCCEEDED: "execution succeeded",
    ExecutionStatus.FAILED: "execution failed",
    ExecutionStatus.CANCELLED: "execution cancelled",
    ExecutionStatus.TIMED_OUT: "execution timed out",
}


class Runner:
    def __init__(self, store: Store, metrics: Metrics, client: HttpClient, *, owner_id: str, job_timeout: float,
                 retry: RetryPolicy, credentials: CredentialResolver, clock: Callable[[], datetime] = utcnow,
                 sleep: Sleep = CancelToken.wait, rand: Callable[[], float] = random.random,
                 tracing: Tracing = NO_TRACING):
        self.owner_id = owner_id
        self._tracing = tracing
        self._store = store
        self._metrics = metrics
        self._job_timeout = job_timeout
        self._clock = clock
        self._steps = StepRunner(metrics, client, retry=retry, clock=clock, sleep=sleep, rand=rand,
                                 checkpoint=self._checkpoint, log_event=self._log, credentials=credentials,
                                 tracing=tracing)

    def run(self, execution_id: str, token: CancelToken) -> None:
        """Run one execution to its end; the worker boundary: nothing raised here escapes."""
        with logutils.bind(execution_id=execution_id):
            started = time.monotonic()
            outcome = Outcome(ExecutionStatus.FAILED)
            try:
                self._run(execution_id, token, started, outcome)
            except Exception as exc:
                log.exception("execution crashed")
                outcome.status, outcome.error = ExecutionStatus.FAILED, f"internal error: {type(exc).__name__}"
                self._finish(execution_id, outcome, started)

    def _run(self, execution_id: str, token: CancelToken, started: float, outcome: Outcome) -> None:
        if token.reason == SHUTDOWN:
            log.debug("execution handed back unstarted: shutting down")
            return
        token.deadline = time.monotonic() + self._job_timeout
        try:
            execution = _patiently(lambda: self._store.claim_execution(
                execution_id, owner=self.owner_id, now=self._clock()), "the claim")
        except StoreError:
            # Still queued under this live process: handed back at shutdown, adopted after a crash.
            log.exception("execution not claimed: store unavailable")
            return
        if execution is None:
            log.debug("execution not claimed: cancelled or taken meanwhile")
            return
        with logutils.bind(tenant_id=execution.tenant_id, workflow_id=execution.workflow_id), \
                self._tracing.execution(execution, outcome):
            self._perform(execution, token, outcome)
            if outcome.handed_back:
                log.info("execution handed back: shutting down")
                return
            if outcome.checkpoint_lost:
                return
            self._finish(execution_id, outcome, started)

    def _perform(self, execution: Execution, token: CancelToken, outcome: Outcome) -> None:
        """Fill in `outcome` from the workflow's steps, resuming after those an earlier run settled."""
        workflow = self._store.get_workflow(None, execution.workflow_id)
        if workflow is None:
            outcome.error = "workflow was deleted"
            return
        outcome.action_type = workflow.steps[0].action_type
        logutils.add(user_id=workflow.user_id)
        self._log("execution started", ExecutionStatus.RUNNING, outcome, 0.0)
        # The last step is recorded with the outcome, so a workflow of one step has no checkpoint to read.
        settled = self._store.list_steps(None, [execution.id])[execution.id] if len(workflow.steps) > 1 else []
        try:
            if not self._steps.run(execution, workflow, settled, token, outcome):
                outcome.checkpoint_lost = True
        except Cancelled as exc:
            self._cancelled(exc.reason, outcome)

    def _checkpoint(self, execution_id: str, record: StepRecord) -> bool:
        """Commit a step's record before the next step starts; False if it could not be."""
        try:
            recorded = _patiently(lambda: self._store.record_step(execution_id, owner=self.owner_id, step=record),
                                  f"step {record.name}")
        except StoreError:
            # Left running under this live process, as an unrecorded outcome is (see _finish).
            log.exception("step not recorded: store unavailable; the next step does not start")
            return False
        if not recorded:
            log.warning("step not recorded: the execution is no longer running here")
        return recorded

    def _cancelled(self, reason: str, outcome: Outcome) -> None:
        if reason == SHUTDOWN:
            outcome.handed_back = True
        elif reason == TIMEOUT:
            outcome.status = ExecutionStatus.TIMED_OUT
            outcome.error = f"execution timed out after {self._job_timeout:g} s"
        else:
            outcome.status, outcome.cancelled_by = ExecutionStatus.CANCELLED, reason
            outcome.error = f"cancelled by {reason}"

    def _finish(self, execution_id: str, outcome: Outcome, started: float) -> None:
        error = clean(outcome.error) if outcome.error else None
        seconds = time.monotonic() - started
        try:
            recorded = _patiently(lambda: self._store.finish_execution(
                execution_id, owner=self.owner_id, status=outcome.status, attempts=outcome.attempts,
                now=self._clock(), result=outcome.result, error=error, cancelled_by=outcome.cancelled_by,
                steps=outcome.steps),
                "the outcome")
        except StoreError:
            # Left running under this live process: handed back at shutdown, adopted after a crash.
            log.exception("execution outcome not recorded: store unavailable")
            return
        if not recorded:
            log.warning("execution outcome not recorded: no longer running here")
            return
        self._metrics.executions.labels(status=outcome.status.value, action_type=outcome.action_type).inc()
        self._metrics.execution_duration.labels(action_type=outcome.action_type).observe(seconds)
        self._log(_MESSAGES[outcome.status], outcome.status, outcome, seconds, error=error)

    def _log(self, message: str, status: ExecutionStatus, outcome: Outcome, seconds: float, **extra: Any) -> None:
        data = {"duration_ms": int(seconds * 1000), "status": status.value,
                "action_type": outcome.action_type, "attempts": outcome.attempts}
        data.update({key: value for key, value in extra.items() if value is not None})
        level = logging.WARNING if status is ExecutionStatus.FAILED else logging.INFO
        log.log(level, message, extra={"data": data})
