"""Run one execution in a worker thread: take it, run its steps (engine/steps.py: templates, conditions,
connectors with retries, a checkpoint per step), and record ONE outcome in the store.

Taking an execution. An execution this process recorded or adopted is already its own: it is `queued`
with this process as owner, and a one-step one is run without a claim (no write before the action:
issue 14). Its outcome is recorded straight from `queued` (finish_execution accepts queued and running,
the owner column is the fence against a stale owner), and `running` is recorded only for one that is
still running at the supervisor's next tick (`flush_pending`, one batched write). What keeps each
guarantee without the claim:
- kill -9: a queued row of a dead owner is adopted and run again exactly like a running one
  (at-least-once, as before);
- cancel: the store does not end an owned queued row at once (it may be starting), it flags it like a
  running one; the owner stops the job through its token (engine/pool.py finishes one that has not
  started as cancelled, unsent), and an adopter that reads the flag finishes it cancelled unsent;
- a workflow of several steps is claimed before its first step: its checkpoints need a running row.
Executions of other owners or of none (distributed mode, handed back) are claimed as before."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, TypeVar

from app import logutils
from app.engine.cancel import SHUTDOWN, TIMEOUT, Cancelled, CancelToken
from app.engine.credentials import CredentialResolver
from app.engine.http import HttpClient
from app.engine.outage import ParkedOutcomes, until_store_answers
from app.engine.steps import Outcome, RetryPolicy, Sleep, StepRunner, clean
from app.engine.unclaimed import UnclaimedRuns
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, StepRecord, Workflow, utcnow
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
        self._unclaimed = UnclaimedRuns(store, owner_id, self.health)
        self._tracing = tracing
        self._store = store
        self._metrics = metrics
        self._job_timeout = job_timeout
        self._clock = clock
        self._steps = StepRunner(metrics, client, retry=retry, clock=clock, sleep=sleep, rand=rand,
                                 checkpoint=self._checkpoint, log_event=self._log, credentials=credentials,
                                 tracing=tracing)

    def run(self, execution_id: str, token: CancelToken, *, request_id: str | None = None,
            owned: bool = False) -> None:
        """Run one execution to its end; the worker boundary: nothing raised here escapes. `request_id`:
        of the request that accepted it in this process, carried on its log lines (its outcome line
        stands for that request's access line, which is at debug). `owned`: the engine recorded or
        adopted it under this runner's owner_id, so it may run without a claim (module docstring)."""
        with logutils.bind(execution_id=execution_id, request_id=request_id):
            outcome = Outcome(ExecutionStatus.FAILED)
            try:
                self._run(execution_id, token, outcome, owned)
            except Exception as exc:
                log.exception("execution crashed")
                outcome.status, outcome.error = ExecutionStatus.FAILED, f"internal error: {type(exc).__name__}"
                self._finish(execution_id, outcome)

    def flush_pending(self) -> int:
        """Record the outcomes parked while the store could not write, and `running` for the executions
        started without a claim before the previous call; return how many outcomes were written.
        Cheap when there is neither; never raises StoreError. Call it every housekeeping tick."""
        self._unclaimed.record_running()
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

    def _run(self, execution_id: str, token: CancelToken, outcome: Outcome, owned: bool) -> None:
        if token.reason == SHUTDOWN:
            log.debug("execution handed back unstarted: shutting down")
            return
        try:
            taken = self._take(execution_id, token, owned)
        except Cancelled as exc:
            if exc.reason == SHUTDOWN:
                log.info("execution not started: shutting down while the store is unavailable")
            else:  # its own, with a cancel request: ends cancelled, nothing sent
                self._cancel_unstarted(execution_id, exc.reason, outcome)
            return
        if taken is None:
            log.debug("execution not started: cancelled or taken meanwhile")
            return
        execution, workflow = taken
        if workflow is None:
            outcome.error = "workflow was deleted"
            self._finish(execution_id, outcome)
            return
        token.deadline = time.monotonic() + self._job_timeout
        outcome.started = time.monotonic()
        if execution.status is ExecutionStatus.QUEUED:
            execution = replace(execution, started_at=self._clock())
            outcome.started_at = execution.started_at
            self._unclaimed.started(execution_id, execution.started_at)
        try:
            with logutils.bind(tenant_id=execution.tenant_id, workflow_id=execution.workflow_id), \
                    self._tracing.execution(execution, outcome):
                self._perform(execution, workflow, token, outcome)
                if outcome.handed_back:
                    log.info("execution handed back: shutting down")
                    return
                if outcome.checkpoint_lost:
                    return
                self._finish(execution_id, outcome)
        finally:
            self._unclaimed.ended(execution_id)

    def cancel_unstarted(self, execution_id: str, reason: str) -> None:
        """Record as cancelled, unsent, an execution of this owner that has not started (or park that
        outcome while the store cannot write: recorded by flush_pending)."""
        with logutils.bind(execution_id=execution_id):
            self._cancel_unstarted(execution_id, reason, Outcome(ExecutionStatus.FAILED))

    def _cancel_unstarted(self, execution_id: str, reason: str, outcome: Outcome) -> None:
        outcome.action_type = self._action_type(execution_id)
        self._cancelled(reason, outcome)
        self._finish(execution_id, outcome)

    def _action_type(self, execution_id: str) -> str:
        """Its first step's action type, for the outcome's log line and metric labels ("unknown" if the
        store cannot say)."""
        try:
            execution = self._store.get_execution(None, execution_id)
            workflow = execution and self._store.get_workflow(None, execution.workflow_id)
        except StoreError:
            return "unknown"
        return workflow.steps[0].action_type if workflow else "unknown"

    def _take(self, execution_id: str, token: CancelToken, owned: bool) -> tuple[Execution, Workflow | None] | None:
        """The execution and its workflow (None: deleted; the outcome says so), or None if it is not this
        runner's to run (cancelled, taken meanwhile). An owned one-step execution is read, not claimed;
        an owned one with a cancel request raises Cancelled with its reason. Cancelled(SHUTDOWN) if the
        engine stops while the store cannot answer."""
        if not owned:
            execution = self._claim(execution_id, token)
        else:
            execution = self._read(token, "execution read", lambda: self._store.get_execution(None, execution_id))
            if execution is None or execution.status is not ExecutionStatus.QUEUED or execution.owner != self.owner_id:
                return None
            if execution.cancelled_by:
                raise Cancelled(execution.cancelled_by)
        if execution is None:
            return None
        workflow = self._read(token, "workflow read", lambda: self._store.get_workflow(None, execution.workflow_id))
        if workflow is not None and execution.status is ExecutionStatus.QUEUED and len(workflow.steps) > 1:
            execution = self._claim(execution_id, token)  # its step checkpoints need a running row
            if execution is None:
                return None
        return execution, workflow

    def _claim(self, execution_id: str, token: CancelToken) -> Execution | None:
        return until_store_answers(lambda: self._store.claim_execution(
            execution_id, owner=self.owner_id, now=self._clock()), token, operation="claim", health=self.health)

    def _perform(self, execution: Execution, workflow: Workflow, token: CancelToken, outcome: Outcome) -> None:
        """Fill in `outcome` from the workflow's steps, resuming after those an earlier run settled."""
        try:
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
                result=outcome.result, error=error, cancelled_by=outcome.cancelled_by, steps=outcome.steps,
                started_at=outcome.started_at)

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
