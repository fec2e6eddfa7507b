"""Helpers for the dashboard's test-client tests: sign in, post forms with the session's CSRF token, and
record workflows and executions through Services and the store (fixtures `services`, `signed_in`)."""
from __future__ import annotations

import re
from html import unescape
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from app.models import Execution, ExecutionStatus, Principal, Workflow, new_id, utcnow

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def services(app):
    return app.extensions["ipaas"]


@pytest.fixture
def signed_in(client, account):
    """The `client`, signed in as `account`."""
    sign_in(client, account.key)
    return client


def sign_in(client: FlaskClient, key: str) -> None:
    client.get("/ui/login")
    response = client.post("/ui/login", data={"api_key": key, "csrf_token": csrf(client)})
    assert response.status_code == 303, response.text


def csrf(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        return session.get("csrf_token", "")


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None, **kwargs: Any):
    """POST a form the way the dashboard's own pages do: with the session's CSRF token."""
    return client.post(path, data={"csrf_token": csrf(client), **(data or {})}, **kwargs)


def field_errors(html: str) -> dict[str, str]:
    """The messages shown beside inputs (unescaped), by input id (the `<id>-error` paragraphs of
    _macros.field_error)."""
    found = re.findall(r'<p class="field-error" id="([a-z_-]+?)-error">([^<]*)</p>', html)
    return {input_id: unescape(message) for input_id, message in found}


def make_credential(services: Any, account: Any, *, name: str = "partner key", kind: str = "http_header",
                    data: dict[str, Any] | None = None) -> Any:
    return services.create_credential(principal_of(account), {
        "name": name, "type": kind, "data": data or {"name": "X-Api-Key", "value": "k-SECRET-1"}})


def principal_of(account: Any) -> Principal:
    return Principal(tenant_id=account.tenant_id, user_id=account.user_id, key_prefix=account.key[:12])


def make_workflow(services: Any, account: Any, **fields: Any) -> Workflow:
    """A workflow of one http_request step, or of the `steps` given."""
    action = {} if "steps" in fields else {"action_type": "http_request", "config": {"url": "http://127.0.0.1:9/hook"}}
    body = {"name": "orders", "trigger_type": "webhook", **action, **fields}
    return services.create_workflow(principal_of(account), body)


def record_execution(services: Any, workflow: Workflow, *, status: str = "queued", payload: Any = None,
                     when: datetime | None = None, **fields: Any) -> Execution:
    """Store an execution as the engine would leave it (the memory store is a real backend)."""
    now = when or utcnow()
    execution = Execution(id=new_id("ex", now), tenant_id=workflow.tenant_id, workflow_id=workflow.id,
                          status=ExecutionStatus.QUEUED, trigger="webhook", payload=payload or {"n": 1},
                          created_at=now, **fields)
    services.store.create_execution(execution)
    if status != "queued":
        services.store.claim_execution(execution.id, owner="test", now=now)
        services.store.finish_execution(execution.id, owner="test", status=ExecutionStatus(status), attempts=1,
                                        now=now, error="boom" if status == "failed" else None)
    return services.store.get_execution(None, execution.id)
