"""Cross-cutting HTTP behaviour: JSON errors everywhere, request ids, access logs, CORS, secrets kept out of logs."""
from __future__ import annotations

import json

import pytest


def test_unknown_path_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.is_json
    assert response.get_json()["error"]["code"] == "not_found"


def test_wrong_method_is_json_405_with_allow(client):
    response = client.delete("/healthz")
    assert response.status_code == 405 and response.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_oversize_body_is_json_413_before_auth_work(client, account):
    response = client.post("/api/workflows", data=b"x" * (1048576 + 1), content_type="application/json",
                           headers=account.headers)
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "request_entity_too_large"


def test_unhandled_exception_is_json_500_without_trace(app):
    def boom():
        raise RuntimeError("secret internals")

    app.add_url_rule("/boom", view_func=boom)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "secret internals" not in response.get_data(as_text=True)


def test_incoming_request_id_is_echoed_and_logged(client, log_lines):
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    access = [line for line in log_lines() if line["message"] == "request"]
    assert access[-1]["request_id"] == "abc-123" and access[-1]["service"] == "ipaas-api"
    assert access[-1]["data"]["method"] == "GET" and access[-1]["data"]["path"] == "/healthz"
    assert access[-1]["data"]["status"] == 200 and access[-1]["data"]["duration_ms"] >= 0
    assert {"timestamp", "level", "message"} <= set(access[-1])


@pytest.mark.parametrize("incoming", ["", "x" * 200, "bad id forged", "id\twith\ttabs", "<script>"])
def test_unsafe_request_id_is_replaced(client, incoming):
    response = client.get("/healthz", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] != incoming and len(response.headers["X-Request-ID"]) == 32


def test_authenticated_request_logs_tenant_but_never_the_key(client, account, log_lines):
    client.get("/api/workflows", headers=account.headers)
    lines = log_lines()
    access = [line for line in lines if line["message"] == "request"][-1]
    assert access["tenant_id"] == account.tenant_id and access["user_id"] == account.user_id
    assert all(account.key not in json.dumps(line) for line in lines)


def test_cors_allows_configured_origin_with_credentials(client, account):
    response = client.get("/api/workflows", headers={**account.headers, "Origin": "http://localhost:3000"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def test_cors_preflight_needs_no_key(client):
    response = client.options("/api/workflows", headers={"Origin": "http://localhost:3000",
                                                        "Access-Control-Request-Method": "POST"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_cors_ignores_unknown_origin(client, account):
    response = client.get("/api/workflows", headers={**account.headers, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_is_off_for_webhooks(client):
    response = client.post("/api/webhooks/wf_missing", json={}, headers={"Origin": "http://localhost:3000"})
    assert "Access-Control-Allow-Origin" not in response.headers
