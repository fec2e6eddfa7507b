"""Regressions found by schemathesis (tests/test_schemathesis.py), each pinned on the Flask test client."""
from __future__ import annotations

import json

import pytest


def make_webhook_workflow(client, account) -> str:
    response = client.post("/api/workflows", headers=account.headers, json={
        "name": "hook", "trigger_type": "webhook", "action_type": "http_request",
        "config": {"url": "https://example.com/hook"}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


# An empty Idempotency-Key used to be taken for no key at all (202, and a repeat ran again), while an
# empty webhook-id was refused: the document says 1 to 255 characters for both.
@pytest.mark.parametrize("header, value", [
    ("Idempotency-Key", ""),
    ("webhook-id", ""),
    ("Idempotency-Key", "k" * 256),
    ("webhook-id", "k" * 256),
])
def test_webhook_idempotency_key_out_of_bounds_is_400_naming_the_header(client, account, header, value):
    workflow_id = make_webhook_workflow(client, account)

    response = client.post(f"/api/webhooks/{workflow_id}", json={"n": 1}, headers={header: value})

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"
    assert header in response.get_json()["error"]["message"]


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": "k"}, {"Idempotency-Key": "k" * 255},
                                     {"webhook-id": "msg_1"}])
def test_webhook_idempotency_key_within_bounds_passes_the_check(client, account, headers):
    workflow_id = make_webhook_workflow(client, account)

    response = client.post(f"/api/webhooks/{workflow_id}", json={"n": 1}, headers=headers)

    # The `app` fixture runs no engine: past the header check the request ends in 503, not 400.
    assert response.status_code == 503, response.get_json()


def nested(levels: int) -> str:
    """JSON text of `levels` arrays, one inside the other, around a 1."""
    return "[" * levels + "1" + "]" * levels


# A body nested deeper than the json module (or the store, or jsonify) can recurse through used to
# escape as a RecursionError: 500 on every JSON route, the public webhook included.
@pytest.mark.parametrize("levels", [101, 5_000, 100_000])
def test_deeply_nested_json_is_400_not_500(client, account, levels):
    workflow_id = make_webhook_workflow(client, account)
    body = nested(levels)
    json_headers = {"Content-Type": "application/json"}

    answers = [
        client.post("/api/workflows", data=body, headers={**account.headers, **json_headers}),
        client.put(f"/api/workflows/{workflow_id}", data=body, headers={**account.headers, **json_headers}),
        client.patch(f"/api/workflows/{workflow_id}", data=body, headers={**account.headers, **json_headers}),
        client.post(f"/api/workflows/{workflow_id}/run", data=body, headers={**account.headers, **json_headers}),
        client.post(f"/api/webhooks/{workflow_id}", data=body, headers=json_headers),
    ]

    for response in answers:
        assert response.status_code == 400, (response.request.path, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] == "bad_request" and "deeper than 100 levels" in error["message"]


def test_json_nested_100_levels_is_accepted_and_read_back_as_json(client, account):
    # object (1) > config (2) > body (3) > 97 arrays: 100 levels in all
    body = ('{"name": "deep", "trigger_type": "manual", "action_type": "http_request", '
            '"config": {"url": "https://example.com", "body": ' + nested(97) + "}}")

    created = client.post("/api/workflows", data=body, headers={**account.headers, "Content-Type": "application/json"})

    assert created.status_code == 201, created.get_json()
    fetched = client.get(f"/api/workflows/{created.get_json()['id']}", headers=account.headers)
    assert fetched.status_code == 200 and fetched.get_json()["config"]["body"] == json.loads(nested(97))


# Python's json reads NaN, Infinity and 1e999 (as inf); the API then answered with bodies that are
# not JSON ({"payload": {"a": NaN}}). They are not JSON (RFC 8259): 400, like any malformed body.
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_are_400(client, account, value):
    workflow_id = make_webhook_workflow(client, account)
    config = '{"url": "https://example.com", "body": {"n": ' + value + "}}"
    body = '{"name": "n", "trigger_type": "manual", "action_type": "http_request", "config": ' + config + "}"
    json_headers = {"Content-Type": "application/json"}

    answers = [
        client.post("/api/workflows", data=body, headers={**account.headers, **json_headers}),
        client.patch(f"/api/workflows/{workflow_id}", data='{"config": ' + config + "}",
                     headers={**account.headers, **json_headers}),
        client.post(f"/api/workflows/{workflow_id}/run", data='{"n": ' + value + "}",
                    headers={**account.headers, **json_headers}),
        client.post(f"/api/webhooks/{workflow_id}", data='{"n": ' + value + "}", headers=json_headers),
    ]

    for response in answers:
        assert response.status_code == 400, (response.request.path, response.get_json())
        assert response.get_json()["error"]["message"].startswith("body is not valid JSON")


def test_large_finite_numbers_are_still_accepted(client, account):
    workflow_id = make_webhook_workflow(client, account)

    response = client.patch(f"/api/workflows/{workflow_id}", headers=account.headers,
                            json={"config": {"url": "https://example.com", "body": {"n": 1.5e308, "m": -2e-308}}})

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["config"]["body"] == {"n": 1.5e308, "m": -2e-308}
