"""Small contract points: the 401 challenge, empty list parameters, header names as executions keep them."""
from __future__ import annotations

import pytest

from tests.receiver import receiver  # noqa: F401 (a fixture)
from tests.test_webhooks_api import app, make_workflow, wait_status  # noqa: F401 (the engine app fixture too)


@pytest.mark.parametrize("authorization, challenge", [
    (None, 'Bearer realm="ipaas"'),
    ("Basic dXNlcjpwdw==", 'Bearer realm="ipaas"'),
    ("Bearer ipk_deadbeef_nope", 'Bearer realm="ipaas", error="invalid_token"'),
])
def test_api_401_carries_a_bearer_challenge(client, authorization, challenge):
    headers = {"Authorization": authorization} if authorization else {}

    response = client.get("/api/workflows", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path, parameter", [
    ("/api/executions?status=", "status"),
    ("/api/executions?cursor=", "cursor"),
    ("/api/executions?workflow_id=", "workflow_id"),
    ("/api/executions?limit=", "limit"),
    ("/api/executions?status=%20", "status"),
    ("/api/workflows?cursor=", "cursor"),
    ("/api/workflows?limit=", "limit"),
])
def test_api_empty_list_parameter_is_a_422_naming_it(client, account, path, parameter):
    response = client.get(path, headers=account.headers)

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["field"] == parameter and parameter in error["message"]


def test_api_execution_headers_have_lower_case_names_as_templates_see_them(client, account, receiver):
    workflow = make_workflow(client, account, receiver.url("/hook"))

    accepted = client.post(f"/api/webhooks/{workflow['id']}", json={"user": {"name": "Bo"}},
                           headers={"X-Event": "order.created", "Authorization": "Bearer secret-token"})
    execution = wait_status(client, account, accepted.get_json()["execution_id"])

    headers = execution["headers"]
    assert headers["x-event"] == "order.created"
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] != "Bearer secret-token"
    assert all(name == name.lower() for name in headers)
    assert receiver.requests("/hook")[0].json()["event"] == headers["x-event"]
