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
from app.engine.outage import ParkedOutcomes, until_store_answers
from app.engine.steps import Outcome, RetryPolicy, Sleep, StepRunner, clean
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, StepRecord, utcnow
from app.store.base import Store, StoreError
from app.store.health import StoreHealth
from app.tracing import NO_TRACING, Tracing

__all__ = ["Outcome", "RetryPolicy", "Runner", "Sleep"]

log = logging.getLogger(__name__)
T = TypeVar("T")


_MESSAGES = {
    ExecutionStatus.SUCCEEDED: "execution succeeded",
    ExecutionStatus.FAILED: "execution failed",
    ExecutionStatus.CANCELLED: "execution cancelled",
    ExecutionStatus.TIMED_OUT: "execution timed out",
}


class Runner:
    """Runs executions for one owner. While the store cannot write, claims and step checkpoints are
    retried in the worker and outcomes parked in memory: the engine's housekeeping must call
    `flush_pending()` every tick, and `flush_until(deadline)` at shutdown before handing executions
    back (see engine/outage.py)."""

    def __init__(self, store: Store, metrics: Metrics, client: HttpClient, *, owner_id: str, job_timeout: float,
                 retry: RetryPolicy, credentials: CredentialResolver, clock: Callable[[], datetime] = utcnow,
                 sleep: Sleep = CancelToken.wait, rand: Callable[[], float] = random.random,
                 tracing: Tracing = NO_TRACING, health: StoreHealth | None = None):
        self.owner_id = owner_id
        self.health = health or StoreHealth(metrics)
        self._parked = ParkedOutcomes(metrics, self.health)
        self._tracing = tracing
        self._store = store
        self._metrics = metrics
        self._job_timeout = job_timeout
        self._clock = clock
        self._steps = StepRunner(metrics, client, retry=retry, clock=clock, sleep=sleep, rand=rand,
                                 checkpoint=self._checkpoint, log_event=self._log, credentials=credentials,
                                 tracing=tracing)

    def run(self, execution_id: str, token: CancelToken, *, request_id: str | None = None) -> None:
        """Run one execution to its end; the worker boundary: nothing raised here escapes. `request_id`:
        of the request that accepted it in this process, carried on its log lines (its outcome line
        stands for that request's access line, which is at debug)."""
        with logutils.bind(execution_id=execution_id, request_id=request_id):
            outcome = Outcome(ExecutionStatus.FAILED)
            try:
                self._run(execution_id, token, outcome)
            except Exception as exc:
                log.exception("execution crashed")
                outcome.status, outcome.error = ExecutionStatus.FAILED, f"internal error: {type(exc).__name__}"
                self._finish(execution_id, outcome)

    def flush_pending(self) -> int:
        """Record the outcomes parked while the store could not write; return how many were written.
        Cheap when none are parked; never raises StoreError. Call it every housekeeping tick."""
        return self._parked.flush()

    @property
    def pending(self) -> int:
        """Outcomes parked, waiting for the store."""
        return len(self._parked)

    def flush_until(self, deadline: float, pause: float = 0.05) -> int:
        """Flush parked outcomes at least once and until none is left or time.monotonic() passes
        `deadline`; return how many are still parked (their executions stay running under owner_id)."""
        while True:
            self.flush_pending()
            if not self.pending or time.monotonic() + pause > deadline:
                return self.pending
            time.sleep(pause)

    def _run(self, execution_id: str, token: CancelToken, outcome: Outcome) -> None:
        if token.reason == SHUTDOWN:
            log.debug("execution handed back unstarted: shutting down")
            return
        try:
            execution = until_store_answers(lambda: self._store.claim_execution(
                execution_id, owner=self.owner_id, now=self._clock()), token, operation="claim", health=self.health)
        except Cancelled:
            log.info("execution not claimed: shutting down while the store is unavailable")
            return
        if execution is None:
            log.debug("execution not claimed: cancelled or taken meanwhile")
            return
        token.deadline = time.monotonic() + self._job_timeout
        outcome.started = time.monotonic()
        with logutils.bind(tenant_id=execution.tenant_id, workflow_id=execution.workflow_id), \
                self._tracing.execution(execution, outcome):
            self._perform(execution, token, outcome)
            if outcome.handed_back:
                log.info("execution handed back: shutting down")
                return
            if outcome.checkpoint_lost:
                return
            self._finish(execution_id, outcome)

    def _perform(self, execution: Execution, token: CancelToken, outcome: Outcome) -> None:
        """Fill in `outcome` from the workflow's steps, resuming after those an earlier run settled."""
        try:
            workflow = self._read(token, "workflow read", lambda: self._store.get_workflow(None, execution.workflow_id))
            if workflow is None:
                outcome.error = "workflow was deleted"
                return
            outcome.action_type = workflow.steps[0].action_type
            logutils.add(user_id=workflow.user_id)
            self._log("execution started", ExecutionStatus.RUNNING, outcome, 0.0, level=logging.DEBUG)
            # The last step is recorded with the outcome, so a workflow of one step has no checkpoint to read.
            settled = self._read(token, "steps read", lambda: self._store.list_steps(None, [execution.id])[
                execution.id]) if len(workflow.steps) > 1 else []
            if not self._steps.run(execution, workflow, settled, token, outcome):
                outcome.checkpoint_lost = True
        except Cancelled as exc:
            self._cancelled(exc.reason, outcome)

    def _read(self, token: CancelToken, operation: str, read: Callable[[], T]) -> T:
        """`read()`, retried while the store cannot answer; Cancelled(SHUTDOWN) if the engine stops first."""
        return until_store_answers(read, token, operation=operation, health=self.health, write=False)

    def _checkpoint(self, execution_id: str, record: StepRecord, token: CancelToken) -> bool:
        """Commit a step's record before the next step starts, retrying while the store cannot write (the
        worker waits: the next step must not start before it); False if the execution is no longer
        running here. Cancelled(SHUTDOWN) if the engine stops first: handed back, to resume at this step."""
        recorded = until_store_answers(lambda: self._store.record_step(execution_id, owner=self.owner_id,
                                                                       step=record),
                                       token, operation="step checkpoint", health=self.health)
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

    def _finish(self, execution_id: str, outcome: Outcome) -> None:
        """Record the outcome, or park it until the store can write (the worker does not wait)."""
        error = clean(outcome.error) if outcome.error else None
        seconds, finished = time.monotonic() - outcome.started, self._clock()

        def record() -> bool:
            return self._store.finish_execution(
                execution_id, owner=self.owner_id, status=outcome.status, attempts=outcome.attempts, now=finished,
                result=outcome.result, error=error, cancelled_by=outcome.cancelled_by, steps=outcome.steps)

        def done(recorded: bool) -> None:
            if not recorded:
                log.warning("execution outcome not recorded: no longer running here")
                return
            self._metrics.executions.labels(status=outcome.status.value, action_type=outcome.action_type).inc()
            self._metrics.execution_duration.labels(action_type=outcome.action_type).observe(seconds)
            self._log(_MESSAGES[outcome.status], outcome.status, outcome, seconds, error=error)

        try:
            recorded = record()
        except StoreError as exc:
            self.health.failed("outcome", exc)
            self._parked.park(execution_id, record, done, exc)
            return
        self.health.written()
        done(recorded)

    def _log(self, message: str, status: ExecutionStatus, outcome: Outcome, seconds: float, *,
             level: int | None = None, **extra: Any) -> None:
        """One line about the execution; by default at warning if it failed, else at info (its outcome
        line is the one line per execution at info: the others are at debug, see README "Logs")."""
        if level is None:
            level = logging.WARNING if status is ExecutionStatus.FAILED else logging.INFO
        if not log.isEnabledFor(level):
            return
        data = {"duration_ms": int(seconds * 1000), "status": status.value,
                "action_type": outcome.action_type, "attempts": outcome.attempts}
        data.update({key: value for key, value in extra.items() if value is not None})
        log.log(level, message, extra={"data": data})
