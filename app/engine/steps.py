"""The steps of one execution, run in order (runner.py claims the execution and records its outcome).

- A step's templates see `steps.<name>` of every earlier step: `status`, `status_code`, `body` (parsed
  JSON when the response says it is JSON, else text; at most engine/http.py's READ_LIMIT = 64 KiB of it,
  with `truncated: true` when the server sent more), `headers` (lower-case names). That data is stored
  with the step's record (`output`, never shown) so that a resumed run sees what the first one saw.
- A step whose `condition` is false or undefined is `skipped`.
- Checkpoints: each step but the last is committed (`checkpoint`) before the next one starts; the last
  step's record goes with the execution's outcome, in the same transaction. So a run resumes at the first
  step that has not settled (succeeded or skipped), and a step that succeeded is never sent again. The one
  step of a one-step workflow that ran is its execution: the execution's row says all its record would
  (step_view shows it from there), so the hot path writes nothing more than before steps existed.
- Every request of a step carries `Idempotency-Key: <execution_id>:<step name>`, the same on each attempt
  and after a resume, so a receiver can drop the rare re-send of a request cut off by a crash.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from app import connectors, rendering
from app.connectors import ActionError, ActionResult, Credential
from app.engine.cancel import SHUTDOWN, TIMEOUT, Cancelled, CancelToken
from app.engine.credentials import CredentialResolver, MissingCredential, scrub
from app.engine.http import HttpClient
from app.errors import ValidationFailed
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, Step, StepRecord, StepStatus, Workflow
from app.security.redact import redact_text
from app.tracing import NO_TRACING, Tracing

log = logging.getLogger(__name__)

BODY_LIMIT = 2048  # characters of a response body shown in a step's (and the execution's) result
IDEMPOTENCY_HEADER = "Idempotency-Key"
SUCCEEDED, FAILED, SKIPPED = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED
Sleep = Callable[[CancelToken, float], None]
_SKIPPED_OUTPUT = {"status": "skipped", "status_code": None, "body": None, "headers": {}}


@dataclass
class Outcome:
    """What a run comes to: the execution's status, attempts and result are those of the last step run."""

    status: ExecutionStatus
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    cancelled_by: str | None = None
    action_type: str = "unknown"
    handed_back: bool = False  # cancelled by shutdown: left unfinished, to run again after restart
    checkpoint_lost: bool = False  # a step's record was refused (no longer running here): stopped there
    started: float = field(default_factory=time.monotonic)  # reset once claimed: a claim may wait for the store
    started_at: datetime | None = None  # when it started without a claim (recorded with the outcome)
    steps: list[StepRecord] = field(default_factory=list)  # records to write with the outcome


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


def clean(message: str) -> str:
    """Return an error message fit to store and log: secrets redacted, on one line."""
    return " ".join(redact_text(message).split())


def shown_result(attempts: int, status_code: int | None, body: str | bytes | None, content_type: str | None = None,
                 truncated: bool = False) -> dict[str, Any]:
    """The result the API shows: the answer's status and its body, secrets redacted, cut to BODY_LIMIT
    characters (`body_truncated` says so); an answer that is not text as `body_base64` (as long at most)
    with its `content_type`."""
    result: dict[str, Any] = {"attempts": attempts}
    if status_code is None:
        return result
    if isinstance(body, bytes):
        encoded = base64.b64encode(body[:BODY_LIMIT // 4 * 3]).decode("ascii")
        result.update(status_code=status_code, content_type=content_type, body_base64=encoded)
        cut = truncated or len(body) > BODY_LIMIT // 4 * 3
    else:
        body = redact_text(body or "")
        result.update(status_code=status_code, body=body[:BODY_LIMIT])
        cut = truncated or len(body) > BODY_LIMIT
    if cut:
        result["body_truncated"] = True
    return result


def step_output(response: ActionResult) -> dict[str, Any]:
    """What templates of later steps see as `steps.<name>` of a step that succeeded (unredacted); an answer
    that is not text as `body_base64`, its `body` None."""
    headers = {name.lower(): value for name, value in response.headers.items()}
    mime = headers.get("content-type", "").split(";")[0].strip().lower()
    body: Any = response.body
    output = {"status": SUCCEEDED.value, "status_code": response.status_code, "body": body, "headers": headers}
    if isinstance(body, bytes):
        output.update(body=None, body_base64=base64.b64encode(body).decode("ascii"))
    elif not response.truncated and (mime == "application/json" or mime.endswith("+json")):
        try:
            output["body"] = json.loads(body)
        except ValueError:
            pass  # a server that calls text JSON: the text it is
    if response.truncated:
        output["truncated"] = True
    return output


def unsettled(steps: tuple[Step, ...], start: int, status: StepStatus) -> list[StepRecord]:
    """Records for the steps from `start` on that will not run in this execution."""
    return [StepRecord(step.name, index, status) for index, step in enumerate(steps) if index >= start]


class StepRunner:
    """Runs the unsettled steps of one execution; the runner passes `checkpoint(execution_id, record, token)`,
    which commits a step's record (True), waiting for the store if it must, or says the execution is no
    longer running here (False: the next step must not start); Cancelled(SHUTDOWN) if the engine stops
    while it waits."""

    def __init__(self, metrics: Metrics, client: HttpClient, *, retry: RetryPolicy, clock: Callable[[], datetime],
                 sleep: Sleep, rand: Callable[[], float],
                 checkpoint: Callable[[str, StepRecord, CancelToken], bool],
                 log_event: Callable[..., None], credentials: CredentialResolver, tracing: Tracing = NO_TRACING):
        self._metrics = metrics
        self._credentials = credentials
        self._tracing = tracing
        self._client = client
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._checkpoint = checkpoint
        self._log_event = log_event

    def run(self, execution: Execution, workflow: Workflow, settled: list[StepRecord], token: CancelToken,
            outcome: Outcome) -> bool:
        """Fill `outcome` by running the steps after the settled ones (records of an earlier run, in order).
        Return False if a checkpoint was refused (the execution no longer runs here): the run stops there,
        unfinished. Cancelled is raised after the records of the cancelled step and the rest are put in the
        outcome (none for shutdown, which may also come while a checkpoint waits for the store)."""
        steps = workflow.steps
        context = rendering.context_for(execution, workflow)
        context["steps"] = seen = {}
        start = self._resume(steps, settled, seen, outcome)
        for index in range(start, len(steps)):
            step, last = steps[index], index == len(steps) - 1
            started = self._clock()
            try:
                token.check()  # cancelled while queued or between steps: do not start this one
                with self._tracing.step(step.name, index):
                    record = self._step(execution, steps, index, context, token, outcome, started, keep=not last)
            except Cancelled as exc:
                if exc.reason != SHUTDOWN:  # at shutdown the execution is handed back, to resume here
                    current = StepRecord(step.name, index, StepStatus.CANCELLED, outcome.attempts, started,
                                         self._clock(), error="timed out" if exc.reason == TIMEOUT
                                         else f"cancelled by {exc.reason}")
                    outcome.steps = [current, *unsettled(steps, index + 1, StepStatus.CANCELLED)]
                raise
            if len(steps) > 1:  # a one-step workflow's step is its execution: logged once, by the runner
                log.log(logging.WARNING if record.status is FAILED else logging.INFO, f"step {record.status.value}",
                        extra={"data": {"step": step.name, "status": record.status.value, "attempts": record.attempts,
                                        "action_type": step.action_type, "duration_ms": record.duration_ms,
                                        "error": record.error}})
            if record.status is FAILED:
                outcome.status = ExecutionStatus.FAILED
                outcome.error = record.error if len(steps) == 1 else f"step {step.name}: {record.error}"
                outcome.steps = [record, *unsettled(steps, index + 1, StepStatus.PENDING)] if len(steps) > 1 else []
                return True
            seen[step.name] = record.output
            if last:
                outcome.status = ExecutionStatus.SUCCEEDED
                outcome.steps = [] if len(steps) == 1 and record.status is SUCCEEDED else [record]
                return True
            if not self._checkpoint(execution.id, record, token):
                return False
        outcome.status = ExecutionStatus.SUCCEEDED  # every step had settled in an earlier run
        return True

    @staticmethod
    def _resume(steps: tuple[Step, ...], settled: list[StepRecord], seen: dict[str, Any], outcome: Outcome) -> int:
        """Take the settled prefix of the steps from earlier records; return where to go on."""
        done = {record.name: record for record in settled if record.status.settled}
        index = 0
        while index < len(steps) and steps[index].name in done:
            record = done[steps[index].name]
            seen[record.name] = record.output if record.output is not None else {"status": record.status.value}
            if record.status is SUCCEEDED:
                outcome.attempts, outcome.result = record.attempts, record.result
            index += 1
        return index

    def _step(self, execution: Execution, steps: tuple[Step, ...], index: int, context: dict[str, Any],
              token: CancelToken, outcome: Outcome, started: datetime, *, keep: bool) -> StepRecord:
        """Run one step (or skip it); its record. `keep`: store what later steps see. The step's credential
        is resolved for the attempts and its secret values scrubbed from all the record keeps."""
        step = steps[index]
        prefix = "" if len(steps) == 1 else f"steps[{index}]."  # a one-step workflow keeps wave-1 field names
        if step.condition is not None:
            try:
                holds = rendering.condition_holds(step.condition, context, f"{prefix}condition")
            except rendering.RenderError as exc:
                outcome.action_type, outcome.attempts, outcome.result = step.action_type, 0, None
                return self._record(step, index, FAILED, started, error=clean(str(exc)))
            if not holds:
                return self._record(step, index, SKIPPED, started, output=_SKIPPED_OUTPUT if keep else None)
        outcome.action_type, outcome.attempts, outcome.result = step.action_type, 0, None
        began = time.monotonic()
        credential = None
        try:
            connector = connectors.get(step.action_type)
            credential = self._credentials.resolve(execution.tenant_id, step.credential_id)
            config = rendering.render_all(step.config, context, f"{prefix}config")
            client = self._client.with_headers({IDEMPOTENCY_HEADER: f"{execution.id}:{step.name}"})
            response = self._attempts(connector, config, client, token, outcome, credential)
            token.check()  # a cancel that lands as the action returns still wins: never a false success
        except (ValidationFailed, rendering.RenderError, MissingCredential) as exc:
            return self._record(step, index, FAILED, started, outcome.attempts, error=clean(str(exc)))
        except ActionError as exc:
            outcome.result = scrub(shown_result(outcome.attempts, exc.status_code, exc.body, exc.content_type),
                                   credential)
            return self._record(step, index, FAILED, started, outcome.attempts, outcome.result,
                                clean(scrub(exc.message, credential)))
        finally:
            self._metrics.step_duration.labels(action_type=step.action_type).observe(time.monotonic() - began)
        outcome.result = scrub(shown_result(outcome.attempts, response.status_code, response.body,
                                            response.content_type, response.truncated), credential)
        return self._record(step, index, SUCCEEDED, started, outcome.attempts, outcome.result,
                            output=scrub(step_output(response), credential) if keep else None)

    def _record(self, step: Step, index: int, status: StepStatus, started: datetime, attempts: int = 0,
                result: dict[str, Any] | None = None, error: str | None = None,
                output: dict[str, Any] | None = None) -> StepRecord:
        return StepRecord(step.name, index, status, attempts, started, self._clock(), result, error, output)

    def _attempts(self, connector: connectors.Connector, config: dict[str, Any], client: HttpClient,
                  token: CancelToken, outcome: Outcome, credential: Credential | None) -> ActionResult:
        while True:
            outcome.attempts += 1
            try:
                with self._tracing.attempt(outcome.attempts):
                    return connector.execute(config, client, token, credential)
            except ActionError as exc:
                token.check()
                if not exc.retryable or outcome.attempts >= self._retry.max_attempts:
                    raise
                delay = self._retry.delay(outcome.attempts, exc.retry_after, self._rand)
                refusal = wait_too_long(exc, delay, token)
                if refusal is not None:
                    raise refusal from exc
                self._metrics.retries.labels(action_type=outcome.action_type).inc()
                self._log_event("execution retried", ExecutionStatus.RUNNING, outcome, 0.0,
                                error=clean(scrub(exc.message, credential)), delay_s=round(delay, 3))
                self._sleep(token, delay)
