"""The workflow form: HTML fields <-> the API's JSON body, and a 422's field name -> the input it is about.

The form sends exactly the body a client would PUT, so Services validates it once, with the same
messages as the API. Only the JSON syntax of the textareas is checked here, since Services gets parsed JSON."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from app import schedules
from app.errors import ValidationFailed
from app.models import TriggerType, Workflow
from app.step_rules import step_json

# The inputs of the workflow form (ids): a 422's field is shown beside the one it names (input_for).
FIELDS = ("name", "trigger_type", "action_type", "config", "steps", "schedule-cron", "schedule-timezone", "enabled",
          "secret")
SINGLE, STEPS = "single", "steps"  # the two ways the form says what a workflow does
EXAMPLE_CONFIGS = {
    "http_request": {"url": "https://example.com/hooks/orders", "method": "POST",
                     "body": {"order": "{{ payload.id }}", "source": "{{ workflow.name }}"}},
    "slack_message": {"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
                      "text": "New order {{ payload.id }}"},
}
EXAMPLE_STEPS = [
    {"name": "lookup", "action_type": "http_request",
     "config": {"method": "GET", "url": "https://crm.example.com/customers/{{ payload.customer_id }}"}},
    {"name": "notify", "action_type": "slack_message", "condition": "steps.lookup.status_code == 200",
     "config": {"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
                "text": "{{ steps.lookup.body.name }} ordered {{ payload.amount }}"}},
]
_FIRST_NAME = re.compile(r"^[A-Za-z_]+")


@dataclass
class WorkflowForm:
    """What the inputs show (never the secret) and one error message per input id.

    `mode` is SINGLE (action_type + config: the wave-1 form, whose errors name `config.x`) or STEPS (the
    `steps` textarea: a JSON list, errors name `steps[i].x`). The schedule inputs are sent only with the
    schedule trigger; an empty time zone is left out (the API's default, UTC)."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def blank(cls) -> WorkflowForm:
        return cls({"name": "", "trigger_type": "webhook", "mode": SINGLE, "action_type": "http_request",
                    "config": json.dumps(EXAMPLE_CONFIGS["http_request"], indent=2),
                    "steps": json.dumps(EXAMPLE_STEPS, indent=2), "cron": "", "timezone": schedules.DEFAULT_TIMEZONE,
                    "enabled": True, "has_secret": False})

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowForm:
        single = len(workflow.steps) == 1 and workflow.steps[0].plain
        schedule = schedules.public(workflow.schedule) or {"cron": "", "timezone": schedules.DEFAULT_TIMEZONE}
        return cls({"name": workflow.name, "trigger_type": workflow.trigger_type, "mode": SINGLE if single else STEPS,
                    "action_type": workflow.action_type, "config": json.dumps(workflow.config, indent=2),
                    "steps": json.dumps([step_json(step) for step in workflow.steps], indent=2),
                    "cron": schedule["cron"], "timezone": schedule["timezone"],
                    "enabled": workflow.enabled, "has_secret": workflow.secret is not None})

    @classmethod
    def posted(cls, form: Mapping[str, str], *, has_secret: bool = False) -> WorkflowForm:
        return cls({"name": form.get("name", ""), "trigger_type": form.get("trigger_type", ""),
                    "mode": STEPS if form.get("mode") == STEPS else SINGLE,
                    "action_type": form.get("action_type", ""), "config": form.get("config", ""),
                    "steps": form.get("steps", ""), "cron": form.get("schedule.cron", ""),
                    "timezone": form.get("schedule.timezone", ""),
                    "enabled": form.get("enabled") == "on", "has_secret": has_secret})

    def body(self, form: Mapping[str, str]) -> dict[str, Any] | None:
        """The API body, or None with self.errors set when the textarea in use is not JSON."""
        body = {key: self.values[key] for key in ("name", "trigger_type", "enabled")}
        if self.values["mode"] == STEPS:
            if not self.values["steps"].strip():
                self.errors["steps"] = "steps is empty: write a JSON list of steps, or choose “One action”"
                return None
            body["steps"] = parse_json(self.values["steps"], "steps", self.errors)
        else:
            body["action_type"] = self.values["action_type"]
            body["config"] = parse_json(self.values["config"], "config", self.errors)
        if self.errors:
            return None
        if self.values["trigger_type"] == TriggerType.SCHEDULE.value:
            zone = self.values["timezone"].strip()
            body["schedule"] = {"cron": self.values["cron"], **({"timezone": zone} if zone else {})}
        if form.get("remove_secret") == "on":
            body["secret"] = None  # PUT without `secret` keeps it; null clears it
        elif form.get("secret"):
            body["secret"] = form["secret"]
        return body

    def refuse(self, error: ValidationFailed) -> None:
        """Show a 422 beside the input it names (config.url -> config, schedule.cron -> schedule-cron,
        steps[1].condition -> steps); others above the form."""
        self.errors[input_for(error.field, FIELDS)] = error.message


def input_for(api_field: str | None, inputs: tuple[str, ...]) -> str:
    """The form input an API field path belongs to: the input of that path with dashes (`schedule.cron` ->
    `schedule-cron`, `data.host` -> `data-host`), else the input of its first name (`config.headers.x` ->
    `config`, `steps[1].condition` -> `steps`), else `form` (shown above the form)."""
    dashed = (api_field or "").replace(".", "-")
    if dashed in inputs:
        return dashed
    match = _FIRST_NAME.match(api_field or "")
    return match.group(0) if match and match.group(0) in inputs else "form"


def parse_json(text: str, name: str, errors: dict[str, str], *, empty: Any = None) -> Any:
    """Parse a textarea; on a syntax error record where it is under `name` and return None."""
    if not text.strip() and empty is not None:
        return empty
    try:
        return json.loads(text)
    except ValueError as error:
        errors[name] = f"{name} is not valid JSON: {error}"
        return None
