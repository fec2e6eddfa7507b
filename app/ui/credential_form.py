"""The credential form: one input per `data` key of the chosen type (app/credentials.py), to the API's body.

Secret values go in password inputs and are never put back into a page, not even after an error. Empty
inputs are left out of `data`, so a missing required key gets the API's "is required" message; a port made
of digits is sent as a number, anything else as typed, for the API to refuse with its own message."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from app import credentials
from app.errors import ValidationFailed
from app.ui.forms import input_for

TYPE_HELP = {
    "smtp": "An SMTP server that email steps send through.",
    "http_header": "One header (such as X-Api-Key) added to every request of an http_request step.",
    "http_basic": "A user name and password that http_request steps send as HTTP Basic authentication.",
}
_HINTS = {
    "host": "smtp.example.com", "port": "587 for starttls, 465 for tls", "from": "alerts@example.com",
    "name": "X-Api-Key",
}
_DEFAULTS = {"smtp": {"port": "587", "security": "starttls"}}


@dataclass(frozen=True)
class Input:
    """One `data` key as a form input: posted as `data.<key>`, with the id `data-<key>`."""

    key: str
    required: bool
    kind: str  # text | number | password | select
    choices: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"data.{self.key}"

    @property
    def id(self) -> str:
        return f"data-{self.key}"

    @property
    def hint(self) -> str:
        return _HINTS.get(self.key, "")


def inputs_of(kind: str) -> list[Input]:
    """The inputs of credential type `kind` (none for an unknown type)."""
    required, optional = credentials.TYPES.get(kind, ((), ()))
    secret = credentials.SECRET_KEYS.get(kind, ())

    def make(key: str, needed: bool) -> Input:
        if key in secret:
            return Input(key, needed, "password")
        if key == "security":
            return Input(key, needed, "select", credentials.SECURITY)
        return Input(key, needed, "number" if key == "port" else "text")

    return [make(key, True) for key in required] + [make(key, False) for key in optional]


@dataclass
class CredentialForm:
    """What the inputs show (`shown`: never a secret), what was typed (`sent`), one error per input id."""

    name: str
    type: str
    shown: dict[str, str]
    sent: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> list[Input]:
        return inputs_of(self.type)

    @classmethod
    def blank(cls, kind: str) -> CredentialForm:
        return cls("", kind, dict(_DEFAULTS.get(kind, {})))

    @classmethod
    def posted(cls, form: Mapping[str, str]) -> CredentialForm:
        kind = form.get("type", "")
        typed = {i.key: (form.get(i.name, ""), i.kind) for i in inputs_of(kind)}
        return cls(form.get("name", ""), kind,
                   shown={key: value for key, (value, how) in typed.items() if how != "password"},
                   sent={key: value for key, (value, _) in typed.items() if value != ""})

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.sent)
        if data.get("port", "").strip().isdigit():
            data["port"] = int(data["port"])
        return {"name": self.name, "type": self.type, "data": data}

    def refuse(self, error: ValidationFailed) -> None:
        """Show a 422 beside the input it names (data.host -> data-host); others above the form."""
        ids = ("name", "type", *(i.id for i in self.inputs))
        self.errors[input_for(error.field, ids)] = error.message
