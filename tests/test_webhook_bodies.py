"""What a sender's bytes become: byte-order marks, charsets, content codings, forms holding JSON,
repeated query keys and unpaired surrogates, through the Flask test client and the recorded execution."""
from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app.api.encodings import decode_content
from app.errors import PayloadTooLarge

BOM = b"\xef\xbb\xbf"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def app(engine_app):
    """Every test here runs executions: conftest's client and account then use the engine's app."""
    return engine_app


@pytest.fixture
def hook(client, account):
    """A webhook workflow (its action goes to a closed port: only the recorded payload matters here)."""
    body = {"name": "bodies", "trigger_type": "webhook", "action_type": "http_request",
            "config": {"url": "http://127.0.0.1:9/", "timeout": 0.2}}
    response = client.post("/api/workflows", json=body, headers=account.headers)
    assert response.status_code == 201, response.get_json()
    return f"/api/webhooks/{response.get_json()['id']}"


def recorded(client, account, response):
    """The execution a 202 recorded (readable at once: it is stored before the answer)."""
    assert response.status_code == 202, response.get_json()
    return client.get(f"/api/executions/{response.get_json()['execution_id']}", headers=account.headers).get_json()


def no_executions(client, account) -> bool:
    return client.get("/api/executions", headers=account.headers).get_json()["items"] == []


@pytest.mark.parametrize("raw, content_type, payload", [
    (BOM + b"a=1&b=2", FORM, {"a": "1", "b": "2"}),
    (BOM + b'{"a": 1}', "application/json", {"a": 1}),
    (BOM + b'{"a": 1}', "application/json; charset=utf-8", {"a": 1}),
    (BOM + b'{"a": 1}', "application/vnd.github+json", {"a": 1}),
    (BOM + b"hello", "text/plain", "hello"),
    (BOM + b"hello", "text/plain; charset=UTF-8", "hello"),
    (b"\xff\xfeh\x00i\x00", "text/plain; charset=utf-16", "hi"),
    (BOM + b"<a/>", "application/xml", "<a/>"),
])
def test_webhook_body_byte_order_mark_is_dropped(client, account, hook, raw, content_type, payload):
    assert recorded(client, account, client.post(hook, data=raw, content_type=content_type))["payload"] == payload


@pytest.mark.parametrize("raw, content_type, payload", [
    (b"H\xe9llo", "text/plain; charset=ISO-8859-1", "Héllo"),
    (b"H\xe9llo", 'text/plain; charset="latin1"', "Héllo"),
    (b"\x80 5", "text/plain; charset=windows-1252", "€ 5"),
    ("Héllo".encode(), "text/plain", "Héllo"),
    (b"name=H\xe9llo", f"{FORM}; charset=ISO-8859-1", {"name": "Héllo"}),
    (b"name=H%E9llo+w", f"{FORM}; charset=ISO-8859-1", {"name": "Héllo w"}),
    (b"name=H%C3%A9llo", FORM, {"name": "Héllo"}),
    ('{"n": "Héllo"}'.encode("latin-1"), "application/json; charset=ISO-8859-1", {"n": "Héllo"}),
])
def test_webhook_body_charset_is_honoured(client, account, hook, raw, content_type, payload):
    assert recorded(client, account, client.post(hook, data=raw, content_type=content_type))["payload"] == payload


def test_webhook_body_unknown_charset_is_415(client, account, hook):
    response = client.post(hook, data=b"hi", content_type="text/plain; charset=klingon")
    assert response.status_code == 415 and "klingon" in response.get_json()["error"]["message"]
    assert no_executions(client, account)


def _gzip_members(raw: bytes) -> bytes:
    half = len(raw) // 2
    return gzip.compress(raw[:half]) + gzip.compress(raw[half:])


@pytest.mark.parametrize("encode, coding", [
    (gzip.compress, "gzip"),
    (gzip.compress, "x-gzip"),
    (_gzip_members, "gzip"),
    (zlib.compress, "deflate"),
    (lambda raw: zlib.compress(raw)[2:-4], "deflate"),  # raw deflate, as some senders send it
    (lambda raw: gzip.compress(raw), "identity, gzip"),
])
@pytest.mark.parametrize("raw, content_type, payload", [
    (b'{"ref": "refs/heads/main"}', "application/json", {"ref": "refs/heads/main"}),
    (b"a=1&a=2&b=3", FORM, {"a": ["1", "2"], "b": "3"}),
    ("Grüße".encode(), "text/plain", "Grüße"),
])
def test_webhook_body_content_encoding_is_decoded(client, account, hook, encode, coding, raw, content_type, payload):
    response = client.post(hook, data=encode(raw), content_type=content_type, headers={"Content-Encoding": coding})
    assert recorded(client, account, response)["payload"] == payload


@pytest.mark.parametrize("coding", ["br", "compress", "zstd", "gzip, br"])
def test_webhook_body_unsupported_content_encoding_is_415(client, account, hook, coding):
    response = client.post(hook, data=b"{}", content_type="application/json", headers={"Content-Encoding": coding})
    assert response.status_code == 415 and response.get_json()["error"]["code"] == "unsupported_media_type"
    assert no_executions(client, account)


@pytest.mark.parametrize("data, coding", [
    (b"not gzip at all", "gzip"),
    (gzip.compress(b'{"a": 1}')[:-12], "gzip"),  # cut short
    (b"\x78\x9c\x00\x00", "deflate"),
    (zlib.compress(b"{}") + b"junk", "deflate"),
])
def test_webhook_body_corrupt_content_encoding_is_400(client, account, hook, data, coding):
    response = client.post(hook, data=data, content_type="application/json", headers={"Content-Encoding": coding})
    assert response.status_code == 400 and coding in response.get_json()["error"]["message"]
    assert no_executions(client, account)


@pytest.mark.parametrize("coding, encode", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_webhook_body_inflating_past_the_limit_is_413(engine_app, client, account, hook, coding, encode):
    limit = engine_app.config["MAX_PAYLOAD_BYTES"]
    at_limit = b'"' + b"a" * (limit - 2) + b'"'
    accepted = client.post(hook, data=encode(at_limit), content_type="application/json",
                           headers={"Content-Encoding": coding})
    assert recorded(client, account, accepted)["payload"] == "a" * (limit - 2)
    over = b'"' + b"a" * (limit - 1) + b'"'
    response = client.post(hook, data=encode(over), content_type="application/json",
                           headers={"Content-Encoding": coding})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"
    assert len(client.get("/api/executions", headers=account.headers).get_json()["items"]) == 1


def post_chunked(app, path: str, raw: bytes):
    """POST `raw` as gunicorn passes on a chunked body: no Content-Length, the stream ended by the server."""
    environ = EnvironBuilder(path=path, method="POST", data=raw, content_type="text/plain").get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    body, status, _ = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(body))


def test_webhook_chunked_body_past_the_limit_is_413_not_cut(engine_app, client, account, hook):
    limit = engine_app.config["MAX_PAYLOAD_BYTES"]
    status, answer = post_chunked(engine_app, hook, b"a" * (limit + 1))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    assert no_executions(client, account)
    status, answer = post_chunked(engine_app, hook, b"a" * limit)
    assert status == 202
    execution = client.get(f"/api/executions/{answer['execution_id']}", headers=account.headers).get_json()
    assert len(execution["payload"]) == limit


@pytest.mark.parametrize("coding, encode", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_decode_content_refuses_a_bomb_without_inflating_it(coding, encode):
    limit = 64 * 1024
    bomb = encode(b"\0" * (200 * 1024 * 1024))  # 200 MB of zeros in about 200 KB
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decode_content(bomb, coding, limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(bomb) + 4 * limit  # the input, and never more than the limit decoded


PUSH = {"ref": "refs/heads/main", "commits": [{"id": "abc"}], "repository": {"full_name": "octo/hello"}}


@pytest.mark.parametrize("payload_field, expected", [
    (json.dumps(PUSH), PUSH),
    (json.dumps([1, 2]), [1, 2]),
    ('{"type": "block_actions", "actions": [{"value": "ok"}]}', {"type": "block_actions", "actions": [{"value": "ok"}]}),
    ("not json", {"payload": "not json"}),
    ('{"half": ', {"payload": '{"half": '}),
])
@pytest.mark.parametrize("multipart", [False, True])
def test_webhook_form_with_only_a_json_payload_field_is_that_json(client, account, hook, payload_field, expected,
                                                                  multipart):
    if multipart:
        response = client.post(hook, data={"payload": payload_field}, content_type="multipart/form-data")
    else:
        response = client.post(hook, data={"payload": payload_field}, content_type=FORM)
    assert recorded(client, account, response)["payload"] == expected


@pytest.mark.parametrize("data, expected", [
    ({"payload": '{"a": 1}', "other": "x"}, {"payload": '{"a": 1}', "other": "x"}),
    ({"payload": ['{"a": 1}', '{"b": 2}']}, {"payload": ['{"a": 1}', '{"b": 2}']}),
    ({"a": ["1", "2"], "b": "3"}, {"a": ["1", "2"], "b": "3"}),
])
@pytest.mark.parametrize("content_type", [FORM, "multipart/form-data"])
def test_webhook_form_fields_stay_fields_otherwise(client, account, hook, data, expected, content_type):
    assert recorded(client, account, client.post(hook, data=data, content_type=content_type))["payload"] == expected


@pytest.mark.parametrize("query, expected", [
    ("tag=a&tag=b", {"tag": ["a", "b"]}),
    ("tag=a&tag=b&tag=c&x=1", {"tag": ["a", "b", "c"], "x": "1"}),
    ("x=1", {"x": "1"}),
    ("x=&x=2", {"x": ["", "2"]}),
    ("", {}),
])
def test_webhook_repeated_query_keys_give_lists(client, account, hook, query, expected):
    assert recorded(client, account, client.post(f"{hook}?{query}", json={}))["query"] == expected


@pytest.mark.parametrize("raw, where", [
    (b'"half \\ud83d"', "$"),
    (b'{"note": "half \\ud83d"}', "$.note"),
    (b'{"a": {"b": ["ok", "\\udc00 low"]}}', "$.a.b[1]"),
    (b'{"a": {"\\ud83d key": 1}}', "a key in $.a"),
    (b'[{"x": "\\ude00\\ud83d"}]', "$[0].x"),  # both halves, in the wrong order
])
def test_webhook_json_with_unpaired_surrogate_is_400(client, account, hook, raw, where):
    response = client.post(hook, data=raw, content_type="application/json")
    message = response.get_json()["error"]["message"]
    assert response.status_code == 400 and "unpaired surrogate" in message and where in message
    assert no_executions(client, account)


def test_webhook_json_with_a_paired_surrogate_escape_is_accepted(client, account, hook):
    response = client.post(hook, data=b'{"emoji": "\\ud83d\\ude00"}', content_type="application/json")
    assert recorded(client, account, response)["payload"] == {"emoji": "\U0001F600"}
