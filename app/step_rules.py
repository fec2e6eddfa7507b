"""The steps of a workflow as a request gives them: shape, names, configs, conditions and references.

Every failure is a ValidationFailed naming the field with dots and indexes (`steps[1].config.url`,
`steps[2].condition`); a workflow written in the wave-1 form (`action_type` + `config`, one step `main`)
keeps its wave-1 field names (`config.url`)."""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

from app import connectors, rendering
from app.errors import ValidationFailed
from app.models import MAIN_STEP, Step, Workflow

STEPS_MAX = 20
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")  # matched whole (fullmatch): no trailing newline slips by
STEP_FIELDS = ("name", "action_type", "config", "condition", "credential_id")
ACTION_FIELDS = ("action_type", "config")


def step_json(step: Step) -> dict[str, Any]:
    """A step as the API shows it (and as a client sends it back)."""
    return {"name": step.name, "action_type": step.action_type, "config": step.config,
            "condition": step.condition, "credential_id": step.credential_id}


def workflow_steps(fields: dict[str, Any], current: Workflow | None) -> tuple[Step, ...]:
    """The steps a create (`current` None) or an update of `current` asks for, validated.

    `steps` replaces them all; `action_type` / `config` edit a workflow of one step. Sending both is
    refused unless they say the same (a GET of a one-step workflow sent back), or the steps are the
    current ones unchanged (a wave-1 client that edits `config` and sends back what it read)."""
    sent_action = any(key in fields for key in ACTION_FIELDS)
    if "steps" in fields and sent_action and current is not None \
            and fields["steps"] == [step_json(step) for step in current.steps]:
        fields = {key: value for key, value in fields.items() if key != "steps"}
    if "steps" in fields:
        steps = parse_steps(fields["steps"])
        if sent_action and not _same_action(fields, steps):
            raise ValidationFailed("send either steps or action_type and config, not both", field="steps")
        return steps
    if current is not None and not sent_action:
        return current.steps
    if current is not None and len(current.steps) > 1:
        key = next(key for key in ACTION_FIELDS if key in fields)
        raise ValidationFailed(f"{key} edits a workflow of one step; this one has {len(current.steps)}: "
                               f"send steps instead", field=key)
    base = current.steps[0] if current is not None else Step(MAIN_STEP, "", {})
    step = replace(base, **{key: fields[key] for key in ACTION_FIELDS if key in fields})
    connectors.validate(step.action_type, step.config)
    check_references((step,), prefixes=[""])  # the client sent config: name its fields as it did
    return (step,)


def _same_action(fields: dict[str, Any], steps: tuple[Step, ...]) -> bool:
    return len(steps) == 1 and all(fields[key] == getattr(steps[0], key) for key in ACTION_FIELDS if key in fields)


def parse_steps(value: Any) -> tuple[Step, ...]:
    """Validate a `steps` list: 1 to STEPS_MAX step objects, unique well-formed names, valid configs and
    conditions, and no reference to a step that is not earlier in the list."""
    if not isinstance(value, list) or not 1 <= len(value) <= STEPS_MAX:
        got = f"{len(value)} steps" if isinstance(value, list) else type(value).__name__
        raise ValidationFailed(f"steps must be a list of 1 to {STEPS_MAX} steps, got {got}", field="steps")
    steps: list[Step] = []
    for index, raw in enumerate(value):
        step = _step(raw, f"steps[{index}]")
        clash = next((i for i, earlier in enumerate(steps) if earlier.name == step.name), None)
        if clash is not None:
            raise ValidationFailed(f"steps[{index}].name {step.name!r} is already the name of steps[{clash}]",
                                   field=f"steps[{index}].name")
        steps.append(step)
    check_references(steps, prefixes=[f"steps[{index}]." for index in range(len(steps))])
    return tuple(steps)


def _step(raw: Any, path: str) -> Step:
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{path} must be an object, got {type(raw).__name__}", field=path)
    unknown = sorted(set(raw) - set(STEP_FIELDS))
    if unknown:
        raise ValidationFailed(f"{path}.{unknown[0]} is not a field of a step", field=f"{path}.{unknown[0]}")
    for key in ("name", *ACTION_FIELDS):
        if key not in raw:
            raise ValidationFailed(f"{path}.{key} is required", field=f"{path}.{key}")
    name = raw["name"]
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValidationFailed(f"{path}.name must match ^[a-z][a-z0-9_]{{0,63}}$, got {name!r}",
                               field=f"{path}.name")
    condition = raw.get("condition")
    if condition is not None:
        if not isinstance(condition, str) or not condition.strip():
            raise ValidationFailed(f"{path}.condition must be a non-empty expression or null",
                                   field=f"{path}.condition")
        rendering.check_condition(condition, f"{path}.condition")
    credential_id = raw.get("credential_id")
    if credential_id is not None and not isinstance(credential_id, str):
        raise ValidationFailed(f"{path}.credential_id must be a credential id or null", field=f"{path}.credential_id")
    with _within(path):
        connectors.validate(raw["action_type"], raw["config"])
    return Step(name, raw["action_type"], raw["config"], condition=condition, credential_id=credential_id)


@contextmanager
def _within(path: str) -> Iterator[None]:
    """Re-raise a connector's ValidationFailed (`config.url ...`) as the step's (`steps[1].config.url ...`)."""
    try:
        yield
    except ValidationFailed as exc:
        raise ValidationFailed(f"{path}.{exc.message}", field=f"{path}.{exc.field}" if exc.field else path) from None


def check_references(steps: list[Step] | tuple[Step, ...], *, prefixes: list[str]) -> None:
    """Refuse a condition or template of a step that names a step not earlier in the list (itself
    included): it could only ever see nothing. `prefixes[i]` starts the field names of step i."""
    earlier: set[str] = set()
    for step, prefix in zip(steps, prefixes):
        sources = [(field, source, False) for field, source in rendering.strings(step.config, f"{prefix}config")]
        if step.condition is not None:
            sources.append((f"{prefix}condition", step.condition, True))
        for field, source, expression in sources:
            names = rendering.referenced_steps(source, expression=expression)
            missing = sorted(names - earlier)
            if missing:
                raise ValidationFailed(f"{field} refers to steps.{missing[0]}, which is not a step before "
                                       f"{step.name!r}", field=field)
        earlier.add(step.name)
