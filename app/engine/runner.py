"""Run one execution in a worker thread: claim it, render its config, call the connector with
retries, and record ONE outcome in the store."""
from __future__ import annotations

import base64
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, TypeVar

from app import connectors, logutils, rendering
from app.connectors import ActionError, ActionResult, Credential
from app.engine.credentials import CredentialResolver, MissingCredential, scrub, scrub_outcome
from app.engine.cancel import SHUTDOWN, TIMEOUT, Cancelled, CancelToken
from app.engine.http import HttpClient
from app.errors import ValidationFailed
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, utcnow
from app.security.redact import redact_text
from app.store.base import Store, StoreError
from app.tracing import NO_TRACING, Tracing

log = logging.getLogger(__name__)

BODY_LIMIT = 2048  # characters of a response body kept in the execution's result
# Claims and outcomes are worth waiting for: an execution whose claim or outcome is not recorded
# stays under this live process until it restarts, and an action that ran is not to run again.
STORE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
Sleep = Callable[[CancelToken, float], None]
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


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_delay: float
    max_delay: float

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): the server's Retry-After
        as asked when it gave one (a throttling server hit early only throttles longer), else
        exponential backoff with full jitter, never above max_delay."""
        if retry_after is not None:
            return retry_after
        return rand() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def wait_too_long(error: ActionError, delay: float, token: CancelToken) -> ActionError | None:
    """The error to fail with now when a destination asks (Retry-After) for a wait that would end
    past the execution's deadline; None when the wait fits, or was not asked for."""
    remaining = token.remaining()
    if error.retry_after is None or remaining is None or delay < remaining:
        return None
    return ActionError(f"{error.message}: the destination asked to retry after {delay:g} s (Retry-After), "
                       f"past the job timeout ({remaining:.0f} s left)", status_code=error.status_code,
                       body=error.body, content_type=error.content_type)


@dataclass
class Outcome:
    status: ExecutionStatus
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    cancelled_by: str | None = None
    action_type: str = "unknown"
    handed_back: bool = False  # cancelled by shutdown: left unfinished, to run again after restart


_MESSAGES = {
    ExecutionStatus.SUCCEEDED: "execution succeeded",
    ExecutionStatus.FAILED: "execution failed",
    ExecutionStatus.CANCELLED: "execution cancelled",
    ExecutionStatus.TIMED_OUT: "execution timed out",
}


def _clean(message: str) -> str:
    """Return an error message fit to store and log: secrets redacted, on one line."""
    return " ".join(redact_text(message).split())


def _result(attempts: int, status_code: int | None, body: str | bytes | None,
            content_type: str | None = None) -> dict[str, Any]:
    """The execution's `result`: the answer's status and its body, cut to BODY_LIMIT characters;
    an answer that is not text as `body_base64` (as long at most) with its `content_type`."""
    result: dict[str, Any] = {"attempts": attempts}
    if status_code is None:
        return result
    if isinstance(body, bytes):
        encoded = base64.b64encode(body[:BODY_LIMIT // 4 * 3]).decode("ascii")
        result.update(status_code=status_code, content_type=content_type, body_base64=encoded)
    else:
        result.update(status_code=status_code, body=redact_text(body or "")[:BODY_LIMIT])
    return result


class Runner:
    def __init__(self, store: Store, metrics: Metrics, client: HttpClient, *, owner_id: str, job_timeout: float,
                 retry: RetryPolicy, credentials: CredentialResolver, clock: Callable[[], datetime] = utcnow,
                 sleep: Sleep = CancelToken.wait, rand: Callable[[], float] = random.random,
                 tracing: Tracing = NO_TRACING):
        self.owner_id = owner_id
        self._tracing = tracing
        self._store = store
        self._credentials = credentials
        self._metrics = metrics
        self._client = client
        self._job_timeout = job_timeout
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

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
            self._finish(execution_id, outcome, started)

    def _perform(self, execution: Execution, token: CancelToken, outcome: Outcome) -> None:
        """Fill in `outcome` from the workflow's action, attempted as often as the policy allows."""
        workflow = self._store.get_workflow(None, execution.workflow_id)
        if workflow is None:
            outcome.error = "workflow was deleted"
            return
        outcome.action_type = workflow.action_type
        logutils.add(user_id=workflow.user_id)
        self._log("execution started", ExecutionStatus.RUNNING, outcome, 0.0)
        credential: Credential | None = None
        try:
            token.check()  # cancelled while queued, in this process only: do not start the action
            connector = connectors.get(workflow.action_type)
            credential = self._credentials.resolve(execution.tenant_id, workflow.credential_id)
            config = rendering.render_all(workflow.config, rendering.context_for(execution, workflow))
            response = self._attempts(connector, config, token, outcome, credential)
            token.check()  # a cancel that lands as the action returns still wins: never a false success
        except (ValidationFailed, rendering.RenderError, MissingCredential) as exc:
            outcome.error = str(exc)
        except ActionError as exc:
            outcome.error = exc.message
            outcome.result = _result(outcome.attempts, exc.status_code, exc.body, exc.content_type)
        except Cancelled as exc:
            self._cancelled(exc.reason, outcome)
        else:
            outcome.status = ExecutionStatus.SUCCEEDED
            outcome.result = _result(outcome.attempts, response.status_code, response.body, response.content_type)
        scrub_outcome(outcome, credential)

    def _attempts(self, connector: connectors.Connector, config: dict[str, Any], token: CancelToken,
                  outcome: Outcome, credential: Credential | None) -> ActionResult:
        while True:
            outcome.attempts += 1
            try:
                with self._tracing.attempt(outcome.attempts):
                    return connector.execute(config, self._client, token, credential)
            except ActionError as exc:
                token.check()
                if not exc.retryable or outcome.attempts >= self._retry.max_attempts:
                    raise
                delay = self._retry.delay(outcome.attempts, exc.retry_after, self._rand)
                refusal = wait_too_long(exc, delay, token)
                if refusal is not None:
                    raise refusal from exc
                self._metrics.retries.labels(action_type=outcome.action_type).inc()
                self._log("execution retried", ExecutionStatus.RUNNING, outcome, 0.0,
                          error=_clean(scrub(exc.message, credential)), delay_s=round(delay, 3))
                self._sleep(token, delay)

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
        error = _clean(outcome.error) if outcome.error else None
        seconds = time.monotonic() - started
        try:
            recorded = _patiently(lambda: self._store.finish_execution(
                execution_id, owner=self.owner_id, status=outcome.status, attempts=outcome.attempts,
                now=self._clock(), result=outcome.result, error=error, cancelled_by=outcome.cancelled_by),
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
