"""email: send a message over SMTP with an `smtp` credential (see smtp_transport.py for the sending).

Config: `to` and optional `cc` (an address or a list of them), `subject`, `text`, optional `html` (sent as
the alternative to `text`) and `reply_to`. The credential gives the server, `from` and the login."""
from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Mapping

from app.connectors import smtp_transport
from app.connectors.base import ActionError, ActionResult, Connector, Credential, check_string
from app.errors import ValidationFailed

if TYPE_CHECKING:
    from app.engine.cancel import CancelToken
    from app.engine.http import HttpClient

MAX_RECIPIENTS = 50


def _addresses(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key, [])
    return [value] if isinstance(value, str) else list(value)


class Email(Connector):
    action_type = "email"
    required = ("to", "subject", "text")
    optional = ("cc", "html", "reply_to")
    credential_types = ("smtp",)
    credential_required = True

    def check(self, config: Mapping[str, Any]) -> None:
        for key in ("to", "cc"):
            value = config.get(key, [])
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
                raise ValidationFailed(f"config.{key} must be an address or a list of addresses",
                                       field=f"config.{key}")
            if len(items) > MAX_RECIPIENTS:
                raise ValidationFailed(f"config.{key} may hold at most {MAX_RECIPIENTS} addresses",
                                       field=f"config.{key}")
        if not _addresses(config, "to"):
            raise ValidationFailed("config.to needs at least one address", field="config.to")
        for key in ("subject", "text", "html", "reply_to"):
            check_string(config, key)

    def execute(self, config: Mapping[str, Any], client: HttpClient, token: CancelToken,
                credential: Credential | None = None) -> ActionResult:
        if credential is None or credential.type != "smtp":
            raise ActionError("email needs an smtp credential")
        message = build_message(config, credential.data["from"])
        return smtp_transport.send(message, credential.data, policy=client.policy, token=token)


def build_message(config: Mapping[str, Any], sender: str) -> EmailMessage:
    """The rendered config as a MIME message; ActionError if templates put a line break in a header."""
    headers = {"From": sender, "To": ", ".join(_addresses(config, "to")), "Subject": config["subject"]}
    if config.get("cc"):
        headers["Cc"] = ", ".join(_addresses(config, "cc"))
    if config.get("reply_to"):
        headers["Reply-To"] = config["reply_to"]
    message = EmailMessage()
    for name, value in headers.items():
        if "\r" in value or "\n" in value:  # rendered from a payload, it could add headers or recipients
            raise ActionError(f"the {name} header contains a line break after rendering")
        message[name] = value
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(config["text"])
    if config.get("html"):
        message.add_alternative(config["html"], subtype="html")
    return message
