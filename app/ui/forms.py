"""The workflow form: HTML fields <-> the API's JSON body, and a 422's field name -> the input it is about.

The form sends exactly the body a client would PUT, so Services validates it once, with the same
messages as the API. Only the JSON syntax of the textareas is checked here, since Services gets parsed JSON."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from app.errors import ValidationFailed
from app.models import Workflow

FIELDS = ("name", "trigger_type", "action_type", "config", "enabled", "secret")
EXAMPLE_CONFIGS = {
    "http_request": {"url": "https://example.com/hooks/orders", "method": "POST",
                     "body": {"order": "{{ payload.id }}", "source": "{{ workflow.name }}"}},
    "slack_message": {"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
                      "text": "New order {{ payload.id }}"},
}
_FIRST_NAME = re.compile(r"^[A-Za-z_]+")


@dataclass
class WorkflowForm:
    """What the inputs show (never the secret) and one error message per input name."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def blank(cls) -> WorkflowForm:
        return cls({"name": "", "trigger_type": "webhook", "action_type": "http_request",
                    "config": json.dumps(EXAMPLE_CONFIGS["http_request"], indent=2), "enabled": True,
                    "has_secret": False})

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowForm:
        return cls({"name": workflow.name, "trigger_type": workflow.trigger_type,
                    "action_type": workflow.action_type, "config": json.dumps(workflow.config, indent=2),
                    "enabled": workflow.enabled, "has_secret": workflow.secret is not None})

    @classmethod
    def posted(cls, form: Mapping[str, str], *, has_secret: bool = False) -> WorkflowForm:
        return cls({"name": form.get("name", ""), "trigger_type": form.get("trigger_type", ""),
                    "action_type": form.get("action_type", ""), "config": form.get("config", ""),
                    "enabled": form.get("enabled") == "on", "has_secret": has_secret})

    def body(self, form: Mapping[str, str]) -> dict[str, Any] | None:
        """The API body, or None with self.errors set when a textarea is not JSON."""
        config = parse_json(self.values["config"], "config", self.errors)
        if "config" in self.errors:
            return None
        body = {key: self.values[key] for key in ("name", "trigger_type", "action_type", "enabled")}
        body["config"] = config
        if form.get("remove_secret") == "on":
            body["secret"] = None  # PUT without `secret` keeps it; null clears it
        elif form.get("secret"):
            body["secret"] = form["secret"]
        return body

    def refuse(self, error: ValidationFailed) -> None:
        """Show a 422 beside the input it names (config.url -> config); others above the form."""
        self.errors[input_for(error.field, FIELDS)] = error.message


def input_for(api_field: str | None, inputs: tuple[str, ...]) -> str:
    """The form input an API field path belongs to: `config.headers.x` -> `config`, else `form`."""
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
