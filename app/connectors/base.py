"""What every connector is and shares: the action error, the result, and config checks."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping
from urllib.parse import urlsplit

from app.errors import ValidationFailed
from app.security.redact import redact_text

if TYPE_CHECKING:
    from app.engine.cancel import CancelToken
    from app.engine.http import HttpClient, HttpResponse


class ActionError(Exception):
    """An action failed; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None,
                 status_code: int | None = None, body: str | bytes | None = None, content_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status_code = status_code
        self.body = body  # bytes: an answer that is not text
        self.content_type = content_type


@dataclass(frozen=True)
class ActionResult:
    status_code: int
    body: str | bytes  # bytes: an answer that is not text
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # of the response, as the server named them
    truncated: bool = False  # the body is cut: the server sent more than engine/http.py's READ_LIMIT

    @classmethod
    def of(cls, response: HttpResponse) -> ActionResult:
        return cls(response.status_code, response.body, response.content_type, response.headers, response.truncated)


@dataclass(frozen=True)
class Credential:
    """A credential as a connector gets it: its type and its decrypted data (see app/credentials.py)."""

    type: str
    data: Mapping[str, Any]


class Connector(ABC):
    """One action type: validates its config when a workflow is saved, runs it in a worker."""

    action_type: ClassVar[str]
    required: ClassVar[tuple[str, ...]]
    optional: ClassVar[tuple[str, ...]]
    #: the credential types a workflow may name for this action, and whether it must name one
    credential_types: ClassVar[tuple[str, ...]] = ()
    credential_required: ClassVar[bool] = False

    def validate(self, config: Mapping[str, Any]) -> None:
        """Raise ValidationFailed naming the field unless `config` suits this action."""
        for key in self.required:
            if key not in config:
                raise ValidationFailed(f"config.{key} is required for {self.action_type}", field=f"config.{key}")
        for key in config:
            if key not in self.required and key not in self.optional:
                raise ValidationFailed(f"config.{key} is not a setting of {self.action_type}", field=f"config.{key}")
        self.check(config)

    @abstractmethod
    def check(self, config: Mapping[str, Any]) -> None:
        """Check the types and values of the settings present (all required ones are)."""

    @abstractmethod
    def execute(self, config: Mapping[str, Any], client: HttpClient, token: CancelToken,
                credential: Credential | None = None) -> ActionResult:
        """Run the action with its rendered config (and its credential, if the workflow names one);
        raise ActionError if it fails."""


def url_problem(url: Any) -> str | None:
    """Say what is wrong with an action URL (None: nothing); only http(s) with a host will do."""
    if not isinstance(url, str):
        return f"must be a string, got {type(url).__name__}"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"must be an http:// or https:// URL with a host, got {redact_text(url)!r}"
    return None


def check_url(config: Mapping[str, Any], key: str) -> None:
    problem = url_problem(config[key])
    if problem:
        raise ValidationFailed(f"config.{key} {problem}", field=f"config.{key}")


def check_string(config: Mapping[str, Any], key: str) -> None:
    if key in config and not isinstance(config[key], str):
        raise ValidationFailed(f"config.{key} must be a string, got {type(config[key]).__name__}",
                               field=f"config.{key}")


def rendered_url(config: Mapping[str, Any], key: str) -> str:
    """Return the rendered URL, refusing one that templates turned into a non-http(s) URL."""
    problem = url_problem(config[key])
    if problem:
        raise ActionError(f"config.{key} {problem}")
    return config[key].strip()
