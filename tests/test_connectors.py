"""The connector registry's validation and each connector against a real HTTP receiver."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from app import connectors
from app.connectors import ActionError
from app.connectors.http import encode_body
from app.engine.cancel import CancelToken
from app.engine.http import READ_LIMIT, parse_retry_after
from app.errors import ValidationFailed
from tests.receiver import Reply, make_client, receiver  # noqa: F401 (fixtures)

SLACK = {"webhook_url": "https://hooks.slack.com/services/T0/B0/secret", "text": "hi {{ payload.user }}"}
HTTP = {"url": "https://api.example.com/items", "method": "PUT", "headers": {"X-Team": "{{ payload.team }}"},
        "body": {"user": "{{ payload.user }}", "n": 1}, "timeout": 5}


@pytest.mark.parametrize("action_type, config, field", [
    ("fax", {}, "action_type"),
    (None, {}, "action_type"),
    ("slack_message", [], "config"),
    ("slack_message", {"text": "x"}, "config.webhook_url"),
    ("slack_message", {"webhook_url": "https://hooks.slack.com/services/a/b/c"}, "config.text"),
    ("slack_message", {**SLACK, "webhook_url": "ftp://hooks.slack.com/x"}, "config.webhook_url"),
    ("slack_message", {**SLACK, "webhook_url": 5}, "config.webhook_url"),
    ("slack_message", {**SLACK, "channel": 5}, "config.channel"),
    ("slack_message", {**SLACK, "blocks": {"type": "section"}}, "config.blocks"),
    ("slack_message", {**SLACK, "colour": "red"}, "config.colour"),
    ("slack_message", {**SLACK, "text": "{{ payload.user "}, "config.text"),
    ("slack_message", {**SLACK, "blocks": [{"text": {"text": "{% if %}"}}]}, "config.blocks[0].text.text"),
    ("http_request", {}, "config.url"),
    ("http_request", {"url": "file:///etc/passwd"}, "config.url"),
    ("http_request", {"url": "http://"}, "config.url"),
    ("http_request", {"url": "javascript:alert(1)"}, "config.url"),
    ("http_request", {**HTTP, "method": "FETCH"}, "config.method"),
    ("http_request", {**HTTP, "method": 1}, "config.method"),
    ("http_request", {**HTTP, "headers": ["X-Team"]}, "config.headers"),
    ("http_request", {**HTTP, "headers": {"X-Count": 3}}, "config.headers.X-Count"),
    ("http_request", {**HTTP, "timeout": 0}, "config.timeout"),
    ("http_request", {**HTTP, "timeout": -1}, "config.timeout"),
    ("http_request", {**HTTP, "timeout": 61}, "config.timeout"),
    ("http_request", {**HTTP, "timeout": "5"}, "config.timeout"),
    ("http_request", {**HTTP, "timeout": True}, "config.timeout"),
    ("http_request", {**HTTP, "body": {"user": "{{ payload.user }"}}, "config.body.user"),
    ("http_request", {**HTTP, "headers": {"X-Team": "{% for %}"}}, "config.headers.X-Team"),
])
def test_validate_refuses_bad_config_naming_the_field(action_type, config, field):
    with pytest.raises(ValidationFailed) as caught:
        connectors.validate(action_type, config)
    assert caught.value.field == field


@pytest.mark.parametrize("action_type, config", [
    ("slack_message", SLACK),
    ("slack_message", {**SLACK, "channel": "#ops", "username": "bot", "blocks": [{"type": "divider"}]}),
    ("http_request", HTTP),
    ("http_request", {"url": "http://{{ payload.host }}/hook"}),
    ("http_request", {"url": "https://x.example", "method": "get", "body": "raw {{ payload }}", "timeout": 0.5}),
])
def test_validate_accepts_good_config(action_type, config):
    connectors.validate(action_type, config)


def test_validation_message_never_echoes_a_slack_token():
    with pytest.raises(ValidationFailed) as caught:
        connectors.validate("slack_message", {**SLACK, "webhook_url": "ftp://hooks.slack.com/services/T/B/sekrit"})
    assert "sekrit" not in caught.value.message


def test_registry_lists_action_types():
    assert connectors.action_types() == ["discord_message", "email", "http_request", "slack_message", "teams_message"]


@pytest.mark.parametrize("body, data, content_type", [
    (None, None, None),
    ({"a": 1}, b'{"a": 1}', "application/json"),
    ([1, "x"], b'[1, "x"]', "application/json"),
    ('{"a": 1}', b'{"a": 1}', "application/json"),
    ("hello", b"hello", "text/plain; charset=utf-8"),
])
def test_encode_body(body, data, content_type):
    assert encode_body(body) == (data, content_type)


def test_slack_posts_json_message(make_client, receiver):
    config = {"webhook_url": receiver.url("/services/T0/B0/secret"), "text": "deployed", "channel": "#ops",
              "blocks": [{"type": "divider"}]}
    result = connectors.get("slack_message").execute(config, make_client(), CancelToken())
    [request] = receiver.requests()
    assert (request.method, request.path, request.headers["content-type"]) == \
        ("POST", "/services/T0/B0/secret", "application/json")
    assert request.json() == {"text": "deployed", "channel": "#ops", "blocks": [{"type": "divider"}]}
    assert (result.status_code, result.body) == (200, "ok")


def test_slack_rate_limit_is_retryable_with_retry_after(make_client, receiver):
    receiver.respond("/hook", Reply(429, body="rate_limited", headers={"Retry-After": "7"}))
    with pytest.raises(ActionError) as caught:
        connectors.get("slack_message").execute({"webhook_url": receiver.url("/hook"), "text": "x"},
                                                make_client(), CancelToken())
    assert (caught.value.retryable, caught.value.retry_after, caught.value.status_code) == (True, 7.0, 429)


@pytest.mark.parametrize("body, sent, content_type", [
    ({"user": "ada", "n": 1}, {"user": "ada", "n": 1}, "application/json"),
    ('{"user": "ada"}', {"user": "ada"}, "application/json"),
    ("plain words", "plain words", "text/plain; charset=utf-8"),
])
def test_http_request_sends_method_headers_and_body(make_client, receiver, body, sent, content_type):
    config = {"url": receiver.url("/items"), "method": "put", "headers": {"X-Team": "core"}, "body": body}
    result = connectors.get("http_request").execute(config, make_client(), CancelToken())
    [request] = receiver.requests()
    assert (request.method, request.headers["x-team"], request.headers["content-type"]) == ("PUT", "core", content_type)
    assert request.headers["user-agent"] == "ipaas/0.1"
    assert (request.json() if content_type == "application/json" else request.body.decode()) == sent
    assert result.status_code == 200


def test_http_request_keeps_the_users_content_type(make_client, receiver):
    config = {"url": receiver.url("/"), "headers": {"content-type": "application/vnd.api+json"}, "body": {"a": 1}}
    connectors.get("http_request").execute(config, make_client(), CancelToken())
    assert receiver.requests()[0].headers["content-type"] == "application/vnd.api+json"


def test_http_request_get_without_body(make_client, receiver):
    connectors.get("http_request").execute({"url": receiver.url("/q"), "method": "GET"}, make_client(), CancelToken())
    [request] = receiver.requests()
    assert (request.method, request.body) == ("GET", b"")


@pytest.mark.parametrize("status, retryable", [(400, False), (404, False), (422, False), (500, True), (503, True),
                                               (429, True)])
def test_http_request_error_statuses(make_client, receiver, status, retryable):
    receiver.respond("/x", Reply(status, body=json.dumps({"error": "nope"})))
    with pytest.raises(ActionError) as caught:
        connectors.get("http_request").execute({"url": receiver.url("/x")}, make_client(), CancelToken())
    assert (caught.value.retryable, caught.value.status_code, caught.value.body) == \
        (retryable, status, '{"error": "nope"}')
    assert caught.value.message == f"HTTP {status} from 127.0.0.1"


def test_http_request_refuses_header_injection(make_client, receiver):
    config = {"url": receiver.url("/"), "headers": {"X-User": "ada\r\nX-Admin: 1"}}
    with pytest.raises(ActionError, match="line break"):
        connectors.get("http_request").execute(config, make_client(), CancelToken())
    assert receiver.requests() == []


def test_http_request_refuses_a_url_that_rendered_badly(make_client):
    with pytest.raises(ActionError, match="http:// or https://"):
        connectors.get("http_request").execute({"url": "http:///nohost"}, make_client(), CancelToken())


def test_connection_refused_is_retryable_and_names_only_the_host(make_client, receiver):
    port = receiver.port
    receiver.__exit__(None, None, None)  # nothing listens on the port any more
    with pytest.raises(ActionError) as caught:
        connectors.get("slack_message").execute(
            {"webhook_url": f"http://127.0.0.1:{port}/services/T1/B1/sekrit", "text": "x"}, make_client(),
            CancelToken())
    assert caught.value.retryable
    assert caught.value.message.startswith("connection to 127.0.0.1 failed")
    assert "sekrit" not in caught.value.message


@pytest.mark.parametrize("content_type, body", [
    ("text/plain; charset=utf-8", "h\u00e9"), ('application/json; charset="UTF-8"', "h\u00e9"),
    ("application/json", "h\u00e9"), (None, "h\u00e9"), ("text/plain; charset=klingon", "h\u00e9"),
    ("text/plain", "h\u00c3\u00a9"),  # as requests decoded it: ISO-8859-1, the old default for text/*
])
def test_client_decodes_the_body_with_the_charset_of_the_answer(make_client, receiver, content_type, body):
    receiver.respond("/x", Reply(body="h\u00e9", headers={"Content-Type": content_type} if content_type else {}))
    assert make_client().send("GET", receiver.url("/x"), token=CancelToken()).body == body


def test_client_reads_no_more_than_the_limit_and_stays_usable(make_client, receiver):
    receiver.respond("/big", Reply(body="x" * (READ_LIMIT + 100_000)))
    client = make_client()
    for _ in range(2):
        assert client.send("GET", receiver.url("/big"), token=CancelToken()).body == "x" * READ_LIMIT
    assert client.send("GET", receiver.url("/small"), token=CancelToken()).body == "ok"


@pytest.mark.parametrize("value, seconds", [
    ("7", 7.0), (" 120 ", 120.0), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ("soon", None), ("", None), (None, None), ("-3", None),
])
def test_parse_retry_after(value, seconds):
    now = datetime(2015, 10, 21, 7, 28, tzinfo=timezone.utc)
    assert parse_retry_after(value, now) == seconds
