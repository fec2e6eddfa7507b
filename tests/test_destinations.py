"""Destinations as they are: slow-drip answers bounded by the attempt's timeout, binary answers
recorded as base64, through the engine and real receivers on 127.0.0.1."""
from __future__ import annotations

import base64
import json

import pytest

from app.connectors import ActionError
from app.engine.cancel import CancelToken
from tests.receiver import Reply, make_client, receiver  # noqa: F401 (fixtures)
from tests.serverproc import wait_until

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01" + bytes(range(256))


@pytest.fixture
def app(engine_app):
    """Every test here runs executions: conftest's client and account then use the engine's app."""
    return engine_app


def run(client, account, config) -> dict:
    """Create an http_request workflow, run it now and return its finished execution."""
    created = client.post("/api/workflows", headers=account.headers, json={
        "name": "dest", "trigger_type": "manual", "action_type": "http_request", "config": config})
    assert created.status_code == 201, created.get_json()
    started = client.post(f"/api/workflows/{created.get_json()['id']}/run", json={}, headers=account.headers)
    url = f"/api/executions/{started.get_json()['execution_id']}"

    def finished():
        body = client.get(url, headers=account.headers).get_json()
        return body if body["status"] not in ("queued", "running") else None

    return wait_until(finished, 15, "the execution to finish")


@pytest.mark.parametrize("reply", [
    Reply(body="x" * 8, drip=0.5, drip_from=40),  # headers at once, then the body byte by byte
    Reply(body="ok", drip=0.5),  # the status line and headers byte by byte
])
def test_slow_drip_answer_fails_each_attempt_as_a_timeout(client, account, receiver, reply):
    receiver.respond("/drip", reply)
    execution = run(client, account, {"url": receiver.url("/drip"), "timeout": 1})
    assert (execution["status"], execution["attempts"]) == ("failed", 3)
    assert execution["error"] == "no response from 127.0.0.1 within 1 s"
    assert len(receiver.requests("/drip")) == 3


@pytest.mark.parametrize("reply", [
    Reply(body="y" * 20, drip=0.1, drip_from=40),
    Reply(body="y" * 20, drip=0.1, drip_from=40, length=False),  # ends at the close: must not look complete
    Reply(body="{}", headers={"Transfer-Encoding": "chunked"}, drip=0.1, drip_from=20, length=False),
    Reply(body="ok", drip=0.1),
])
def test_client_timeout_bounds_the_whole_attempt(make_client, receiver, reply):
    receiver.respond("/drip", reply)
    with pytest.raises(ActionError) as caught:
        make_client().send("GET", receiver.url("/drip"), token=CancelToken(), timeout=0.5)
    assert caught.value.retryable and caught.value.message == "no response from 127.0.0.1 within 0.5 s"


def test_client_quick_drip_within_the_timeout_succeeds(make_client, receiver):
    receiver.respond("/drip", Reply(body="abc", drip=0.01))
    response = make_client().send("GET", receiver.url("/drip"), token=CancelToken(), timeout=5)
    assert (response.status_code, response.body) == (200, "abc")


@pytest.mark.parametrize("body, headers", [
    (PNG, {"Content-Type": "image/png"}),
    (b"\x00\x01\x02\xff", {"Content-Type": "application/octet-stream"}),
    (b"%PDF-1.7\n\xe2\xe3\xcf\xd3", {"Content-Type": "application/pdf"}),
    (b"\xff\xd8\xff\xe0 no type", {}),
])
def test_binary_answer_is_recorded_as_base64_with_its_type(client, account, receiver, body, headers):
    receiver.respond("/bin", Reply(body=body, headers=headers))
    execution = run(client, account, {"url": receiver.url("/bin")})
    result = execution["result"]
    assert execution["status"] == "succeeded" and "body" not in result
    assert base64.b64decode(result["body_base64"]) == body
    assert result["content_type"] == headers.get("Content-Type")
    json.dumps(result, allow_nan=False).encode("utf-8")  # valid JSON, nothing mangled


def test_binary_answer_is_bounded_like_body(client, account, receiver):
    receiver.respond("/big", Reply(body=bytes(range(256)) * 64, headers={"Content-Type": "image/png"}))
    result = run(client, account, {"url": receiver.url("/big")})["result"]
    assert len(result["body_base64"]) <= 2048
    assert base64.b64decode(result["body_base64"]) == (bytes(range(256)) * 64)[:1536]


def test_binary_error_answer_is_recorded_as_base64(client, account, receiver):
    receiver.respond("/err", Reply(404, body=PNG, headers={"Content-Type": "image/png"}))
    execution = run(client, account, {"url": receiver.url("/err")})
    assert (execution["status"], execution["result"]["status_code"]) == ("failed", 404)
    assert base64.b64decode(execution["result"]["body_base64"]) == PNG


@pytest.mark.parametrize("body, headers, text", [
    (b'{"ok": true}', {"Content-Type": "application/json"}, '{"ok": true}'),
    (b"H\xe9llo", {"Content-Type": "text/plain; charset=ISO-8859-1"}, "Héllo"),
    ("plain é".encode(), {}, "plain é"),
    (b"<a/>", {"Content-Type": "application/atom+xml"}, "<a/>"),
    (b"csv,\xc3\xa9", {"Content-Type": "application/csv; charset=utf-8"}, "csv,é"),
])
def test_text_answer_stays_text(client, account, receiver, body, headers, text):
    receiver.respond("/txt", Reply(body=body, headers=headers))
    result = run(client, account, {"url": receiver.url("/txt")})["result"]
    assert result["body"] == text and "body_base64" not in result
