"""Use cases: the only code that touches both the store and the engine. Views call these."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence

from app import logutils, overview, schedules, step_rules, step_view, validation
from app.engine.base import Engine
from app.errors import Conflict, NotFound, RateLimited, Unavailable
from app.metrics import Metrics
from app.models import Execution, ExecutionStatus, Page, Principal, StepRecord, Workflow, new_id, utcnow
from app.security import apikeys
from app.security.crypto import SecretBox
from app.security.ratelimit import TenantRateLimiter
from app.services_credentials import CredentialsMixin
from app.store import Store
from app.store.health import StoreHealth
from app.tracing import NO_TRACING, Tracing

log = logging.getLogger(__name__)
WAIT_POLL_SECONDS = 0.2


@dataclass
class Services(CredentialsMixin):
    store: Store
    engine: Engine | None
    metrics: Metrics
    config: Mapping[str, Any]
    rate_limiter: TenantRateLimiter
    health: StoreHealth  # whether the store can write, fed by the writes below and by the engine's
    box: SecretBox
    tracing: Tracing = NO_TRACING

    # --- workflows ---------------------------------------------------------------------------------
    def create_workflow(self, principal: Principal, body: Any) -> Workflow:
        fields = validation.workflow_fields(body, partial=False)
        steps = step_rules.workflow_steps(fields, None)
        scheme = fields.get("signature_scheme", "auto")
        validation.check_secret_for_scheme(fields.get("secret"), scheme)
        now = utcnow()
        secret = fields.get("secret")
        workflow = Workflow(id=new_id("wf", now), tenant_id=principal.tenant_id, user_id=principal.user_id,
                            name=fields["name"], trigger_type=fields["trigger_type"],
                            action_type=steps[0].action_type, config=steps[0].config, steps=steps,
                            enabled=fields.get("enabled", True), secret=secret and self.box.encrypt(secret),
                            signature_scheme=scheme, created_at=now, updated_at=now,
                            schedule=schedules.stamp(None, fields.get("schedule"), enabled=True, now=now))
        validation.check_trigger(workflow.trigger_type, workflow.schedule)
        self.check_credentials(workflow)
        return self.store.create_workflow(workflow)

    def get_workflow(self, principal: Principal, workflow_id: str) -> Workflow:
        workflow = self.store.get_workflow(principal.tenant_id, workflow_id)
        if workflow is None:
            raise NotFound(f"no workflow {workflow_id!r}")
        return workflow

    def list_workflows(self, principal: Principal, *, limit: int, cursor: str | None) -> Page[Workflow]:
        return self.store.list_workflows(principal.tenant_id, limit=limit, cursor=cursor)

    def update_workflow(self, principal: Principal, workflow_id: str, body: Any, *, partial: bool) -> Workflow:
        """PUT replaces every field but `secret` (absent keeps it, null clears it); PATCH merges."""
        fields = validation.workflow_fields(body, partial=partial)
        current = self.get_workflow(principal, workflow_id)
        steps = step_rules.workflow_steps(fields, current)
        if not partial:
            fields = {"enabled": True, "signature_scheme": "auto", "schedule": None, **fields}
        elif fields.get("trigger_type", "schedule") != "schedule":
            fields.setdefault("schedule", None)  # a PATCH away from schedule drops it
        # The secret's checks need its plaintext: the one sent, else the stored one decrypted.
        secret = fields["secret"] if "secret" in fields else self.reveal_secret(current)
        now = utcnow()
        if "secret" in fields:
            fields["secret"] = secret and self.box.encrypt(secret)
        kept = {key: value for key, value in fields.items() if key not in ("steps", *step_rules.ACTION_FIELDS)}
        updated = replace(current, **kept, action_type=steps[0].action_type, config=steps[0].config, steps=steps,
                          updated_at=now)
        updated = replace(updated, schedule=schedules.stamp(current, updated.schedule, enabled=updated.enabled,
                                                             now=now))
        validation.check_secret_for_scheme(secret, updated.signature_scheme)
        validation.check_trigger(updated.trigger_type, updated.schedule)
        self.check_credentials(updated)
        stored = self.store.update_workflow(updated)
        if stored is None:
            raise NotFound(f"no workflow {workflow_id!r}")
        return stored

    def delete_workflow(self, principal: Principal, workflow_id: str) -> None:
        if not self.store.delete_workflow(principal.tenant_id, workflow_id, now=utcnow()):
            raise NotFound(f"no workflow {workflow_id!r}")

    # --- executions --------------------------------------------------------------------------------
    def webhook_workflow(self, workflow_id: str) -> Workflow:
        """The workflow a sender posts to; unknown and disabled ones look the same to the sender."""
        workflow = self.store.get_workflow(None, workflow_id)
        if workflow is None or not workflow.enabled:
            raise NotFound(f"no enabled workflow {workflow_id!r}")
        return workflow

    def ingest(self, workflow: Workflow, *, trigger: str, payload: Any, headers: dict[str, str] | None = None,
               query: dict[str, Any] | None = None, idempotency_key: str | None = None,
               replay_of: str | None = None, steps: Sequence[StepRecord] = ()) -> tuple[Execution, bool]:
        """Record a queued execution (with `steps`: records of steps it starts after) and hand it to the
        engine; return it and whether it is new.

        The slot is taken first so that a full queue refuses the request before anything is
        recorded: a 503 leaves no trace but the dropped counter. A repeat of an idempotency key is
        answered before both the rate limit and the queue: it costs nothing and runs nothing."""
        now = utcnow()
        if idempotency_key is not None:
            since = now - timedelta(seconds=self.config["IDEMPOTENCY_TTL"])
            first = self.store.find_by_idempotency_key(workflow.id, idempotency_key, since=since)
            if first is not None:
                self._log_ingest(first, workflow, created=False)
                return first, False
        self._take_rate_token(workflow.tenant_id)
        engine = self._engine()
        execution = Execution(id=new_id("ex", now), tenant_id=workflow.tenant_id, workflow_id=workflow.id,
                              status=ExecutionStatus.QUEUED, trigger=trigger, payload=payload, created_at=now,
                              headers=headers or {}, query=query or {}, owner=engine.owner_id,
                              replay_of=replay_of, trace_context=self.tracing.traceparent())
        with engine.slot(self.config["ENQUEUE_TIMEOUT"]) as slot:
            execution, created = self.store.create_execution(
                execution, idempotency_key=idempotency_key, idempotency_ttl=self.config["IDEMPOTENCY_TTL"],
                steps=steps)
            self.health.written()
            if created:
                slot.submit(execution.id)
        self._log_ingest(execution, workflow, created=created)
        return execution, created

    @staticmethod
    def _log_ingest(execution: Execution, workflow: Workflow, *, created: bool) -> None:
        """At debug for a new execution (its outcome line is at info), at info for a repeat (which has none)."""
        level = logging.DEBUG if created else logging.INFO
        if not log.isEnabledFor(level):
            return
        with logutils.bind(tenant_id=workflow.tenant_id, workflow_id=workflow.id, execution_id=execution.id):
            log.log(level, "execution accepted" if created else "execution repeated: idempotency key seen",
                    extra={"data": {"trigger": execution.trigger, "status": execution.status.value,
                                    "action_type": workflow.action_type}})

    def run_now(self, principal: Principal, workflow_id: str, payload: Any) -> Execution:
        workflow = self.get_workflow(principal, workflow_id)
        return self.ingest(workflow, trigger="manual", payload=payload)[0]

    def replay(self, principal: Principal, execution_id: str, *, from_failed: bool = False) -> Execution:
        """Run the execution's payload again, every step; `from_failed`: keep the results of the steps that
        succeeded (or were skipped) before the first that did not, and start there. Conflict if the
        execution is still running or has no such step (it succeeded)."""
        original = self.get_execution(principal, execution_id)
        workflow = self.store.get_workflow(principal.tenant_id, original.workflow_id)
        if workflow is None:
            raise Conflict(f"workflow {original.workflow_id!r} of execution {execution_id!r} was deleted")
        kept: list[StepRecord] = []
        if from_failed:
            if not original.status.terminal or original.status is ExecutionStatus.SUCCEEDED:
                raise Conflict(f"execution {execution_id!r} is {original.status.value}: it has no failed step to "
                               f"start from; replay it without ?from=failed to run every step again")
            records = self.store.list_steps(principal.tenant_id, [original.id])[original.id]
            for record in records:
                if not record.status.settled:
                    break
                kept.append(record)
        return self.ingest(workflow, trigger="replay", payload=original.payload, headers=original.headers,
                           query=original.query, replay_of=original.id, steps=kept)[0]

    def get_execution(self, principal: Principal, execution_id: str) -> Execution:
        execution = self.store.get_execution(principal.tenant_id, execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id!r}")
        return execution

    def steps_of(self, tenant_id: str | None, executions: Sequence[Execution]) -> dict[str, list[StepRecord]]:
        """The steps the API shows for each execution (step_view), by execution id; tenant_id None: any."""
        records = self.store.list_steps(tenant_id, [execution.id for execution in executions])
        workflows: dict[str, Workflow | None] = {}
        shown = {}
        for execution in executions:
            mine = records[execution.id]
            if step_view.needs_workflow(execution, mine) and execution.workflow_id not in workflows:
                workflows[execution.workflow_id] = self.store.get_workflow(tenant_id, execution.workflow_id)
            shown[execution.id] = step_view.steps_view(execution, mine, workflows.get(execution.workflow_id))
        return shown

    def list_executions(self, principal: Principal, *, workflow_id: str | None, status: ExecutionStatus | None,
                        limit: int, cursor: str | None) -> Page[Execution]:
        return self.store.list_executions(principal.tenant_id, workflow_id=workflow_id, status=status,
                                          limit=limit, cursor=cursor)

    def cancel(self, principal: Principal, execution_id: str, *, by: str | None = None) -> Execution:
        """Cancel through the store (so the owning process sees it) and locally, for speed."""
        by = by or f"api:{principal.user_id}"
        execution = self.store.request_cancel(principal.tenant_id, execution_id, by=by, now=utcnow())
        if execution is None:
            raise NotFound(f"no execution {execution_id!r}")
        if execution.status.terminal and execution.cancelled_by != by:
            raise Conflict(f"execution {execution_id!r} already finished: {execution.status.value}")
        if self.engine is not None and self.engine.cancel(execution_id, by) and not execution.status.terminal:
            # It may have ended here and now (one waiting for a worker is recorded cancelled at once).
            execution = self.store.get_execution(principal.tenant_id, execution_id) or execution
        return execution

    def wait(self, execution: Execution, seconds: float, hung_up: Callable[[], bool]) -> Execution:
        """Wait for the execution to end; cancel it if the sender hangs up first."""
        engine = self._engine()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if engine.wait(execution.id, min(WAIT_POLL_SECONDS, left)):
                break
            if hung_up():
                self.store.request_cancel(execution.tenant_id, execution.id, by="client disconnected", now=utcnow())
                engine.cancel(execution.id, "client disconnected")
                break
        return self.store.get_execution(execution.tenant_id, execution.id) or execution

    # --- dashboard: sign-in and read-only summaries ---------------------------------------------------
    def sign_in(self, key: str) -> Principal:
        """Check an API key typed into the sign-in form, exactly as the API checks a bearer key."""
        return apikeys.authenticate_key(self.store, key)

    def session_principal(self, key_prefix: str) -> Principal:
        """Re-check a signed-in session's key on each request: Unauthorized once it is revoked."""
        return apikeys.principal_for_prefix(self.store, key_prefix)

    def last_executions(self, principal: Principal, workflow_ids: list[str]) -> dict[str, Execution]:
        return overview.last_executions(self.store, principal, workflow_ids)

    def queue_overview(self, principal: Principal, *, now: datetime | None = None) -> overview.QueueOverview:
        return overview.queue_overview(self.store, self.metrics, principal, now=now or utcnow())

    def _take_rate_token(self, tenant_id: str) -> None:
        try:
            self.rate_limiter.check(tenant_id)
        except RateLimited:
            self.metrics.rate_limited.inc()
            raise

    def _engine(self) -> Engine:
        if self.engine is None:
            raise Unavailable("this process runs no execution engine", retry_after=5)
        return self.engine
