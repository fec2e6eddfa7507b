"""An execution's steps as the API shows them: its step records, completed from its workflow.

The runner writes a step's record when the step ends (engine/steps.py), and at the end the records of
every step, so a finished execution's records are its steps. Before that, the workflow says which steps
are still to come: `pending`, and for a running execution the first of them `running` (started when the
step before it ended). An execution that ended before any step was recorded (cancelled while queued, or
run before steps existed) shows its workflow's steps: a single step takes the execution's own status,
attempts, timing, result and error; several steps are `cancelled` or `pending`."""
from __future__ import annotations

from app.models import Execution, ExecutionStatus, StepRecord, StepStatus, Workflow

_ENDED_AS = {
    ExecutionStatus.SUCCEEDED: StepStatus.SUCCEEDED,
    ExecutionStatus.FAILED: StepStatus.FAILED,
    ExecutionStatus.CANCELLED: StepStatus.CANCELLED,
    ExecutionStatus.TIMED_OUT: StepStatus.CANCELLED,
}


def needs_workflow(execution: Execution, records: list[StepRecord]) -> bool:
    """Whether `steps_view` needs the execution's workflow (it has records for every step otherwise)."""
    return not (execution.status.terminal and records)


def steps_view(execution: Execution, records: list[StepRecord], workflow: Workflow | None) -> list[StepRecord]:
    """The execution's steps in workflow order; `workflow` None: deleted (the records alone are shown)."""
    if workflow is None or not needs_workflow(execution, records):
        return records
    if execution.status.terminal:
        if len(workflow.steps) == 1:
            e = execution
            return [StepRecord(workflow.steps[0].name, 0, _ENDED_AS[e.status], e.attempts, e.started_at,
                               e.finished_at, e.result, e.error)]
        status = StepStatus.CANCELLED if _ENDED_AS[execution.status] is StepStatus.CANCELLED else StepStatus.PENDING
        return [StepRecord(step.name, index, status) for index, step in enumerate(workflow.steps)]
    recorded = {record.name: record for record in records if record.status.settled}
    view: list[StepRecord] = []
    current = execution.status is ExecutionStatus.RUNNING
    since = execution.started_at
    for index, step in enumerate(workflow.steps):
        record = recorded.get(step.name)
        if record is not None:
            view.append(record)
            since = record.finished_at
        elif current:
            view.append(StepRecord(step.name, index, StepStatus.RUNNING, started_at=since))
            current = False
        else:
            view.append(StepRecord(step.name, index, StepStatus.PENDING))
    return view
