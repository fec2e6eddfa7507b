"""The thin webhook path (api/thin.py) answers as Flask does: the same environ is given to the app's WSGI
callable (the thin path in front) and to Flask's own behind it, and the status, headers, JSON body,
access line, other request-thread log lines and metrics of the two answers are compared.

Every other test that posts to /api/webhooks/ through the test client goes through the thin path too."""
from __future__ import annotations

import gzip
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from flask import request_started
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app import create_app, shutdown_app
from app.security.signatures import sign_github
from tests.conftest import TEST_SECRET_KEY, build_app, make_account
from tests.fakes import FailingStore

LIMIT = 1000  # MAX_PAYLOAD_BYTES of these apps
SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGhlLXRoaW4tcGF0aA=="
REQUEST_THREAD_LOGGERS = ("ipaas.access", "app.api.", "app.services")


@pytest.fixture
def log_level() -> int:
    return logging.DEBUG  # an accepted webhook's access line is at debug


@pytest.fixture
def app(store):
    """An engine whose executions go to a closed port (only the answers matter), a small body limit."""
    app = build_app(store, START_ENGINE=True, WORKERS=2, QUEUE_SIZE=50, MAX_PAYLOAD_BYTES=LIMIT,
                    RETRY_BASE_DELAY=0.01, RETRY_MAX_DELAY=0.02)
    yield app
    shutdown_app(app, grace=5)


def add_workflow(app, account, **extra) -> str:
    response = app.test_client().post("/api/workflows", headers=account.headers, json={
        "name": "thin", "trigger_type": "webhook", "action_type": "http_request",
        "config": {"url": "http://127.0.0.1:9/", "timeout": 0.2}, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


@pytest.fixture
def hook(app, account) -> str:
    return f"/api/webhooks/{add_workflow(app, account)}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    lines: list[tuple]
    metrics: dict[tuple, float]


def webhook_metrics(app) -> dict[tuple, float]:
    text = app.extensions["ipaas"].metrics.render().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name in ("ipaas_webhooks_received_total", "ipaas_webhook_ack_seconds_count")}


def exchange(app, log_lines, wsgi, make_environ: Callable[[], dict], request_id: str) -> Answer:
    """Send one request to `wsgi`; its answer, with the request's own values (ids, durations) masked."""
    environ = make_environ()
    environ["HTTP_X_REQUEST_ID"] = request_id
    before_lines, before_metrics = len(log_lines()), webhook_metrics(app)
    body, status, headers = run_wsgi_app(wsgi, environ, buffered=True)
    raw = b"".join(body)
    answer_headers = dict(headers)
    assert answer_headers["X-Request-ID"] == request_id
    answer_headers["X-Request-ID"] = "the request's id"
    lines = [(line["level"], line["logger"], line["message"], {k: v for k, v in line.get("data", {}).items()
             if k != "duration_ms"}, line.get("tenant_id"), line.get("workflow_id"))
             for line in log_lines()[before_lines:]
             if line.get("request_id") == request_id and line["logger"].startswith(REQUEST_THREAD_LOGGERS)]
    after = webhook_metrics(app)
    counted = {key: value - before_metrics.get(key, 0) for key, value in after.items()
               if value != before_metrics.get(key, 0)}
    parsed: Any = raw
    if answer_headers.get("Content-Type") == "application/json" and raw:  # HEAD has no body
        parsed = json.loads(raw)
        if "execution_id" in parsed:
            parsed["execution_id"] = "an execution id"
            answer_headers["Content-Length"] = "masked with the id"
    return Answer(int(status.split()[0]), answer_headers, parsed, lines, counted)


def both_paths(app, log_lines, make_environ: Callable[[], dict]) -> tuple[Answer, Answer]:
    thin = exchange(app, log_lines, app.wsgi_app, make_environ, "req-thin")
    flask = exchange(app, log_lines, app.wsgi_app.flask_wsgi, make_environ, "req-flask")
    return thin, flask


def environ(method: str, path: str, *, data: bytes = b"", content_type: str | None = "application/json",
            headers: dict[str, str] | None = None, chunked: bool = False) -> Callable[[], dict]:
    """A maker of fresh environs (the body stream is read once); `chunked`: no Content-Length, the
    server terminating the stream, as gunicorn does for Transfer-Encoding: chunked."""
    def make() -> dict:
        # EnvironBuilder reads a path starting with // as a URL with a host: extra slashes are put back after.
        extra_slashes = "/" * (len(path) - len(path.lstrip("/")) - 1)
        built = EnvironBuilder(path=path.removeprefix(extra_slashes), method=method, data=data,
                               content_type=content_type, headers=headers or {}).get_environ()
        built["PATH_INFO"] = extra_slashes + built["PATH_INFO"]
        if chunked:
            del built["CONTENT_LENGTH"]
            built["wsgi.input_terminated"] = True
        return built
    return make


def gzipped_over_limit() -> bytes:
    return gzip.compress(b'{"a": "' + b"x" * LIMIT + b'"}')


CASES = {
    "accepted json": dict(method="POST", data=b'{"a": 1}'),
    "accepted form": dict(method="POST", data=b"a=1&a=2", content_type="application/x-www-form-urlencoded"),
    "accepted text, query kept": dict(method="POST", suffix="?tag=blue&tag=red", data=b"hi", content_type="text/plain"),
    "accepted without a type": dict(method="POST", data=b"raw", content_type=None),
    "accepted chunked": dict(method="POST", data=b'{"a": 1}', chunked=True),
    "accepted gzip": dict(method="POST", data=gzip.compress(b'{"a": 1}'), headers={"Content-Encoding": "gzip"}),
    "accepted multipart": dict(method="POST", content_type="multipart/form-data; boundary=b",
                               data=b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--b--\r\n'),
    "accepted from a browser origin": dict(method="POST", data=b"{}", headers={"Origin": "http://localhost:3000"}),
    "accepted with a session cookie": dict(method="POST", data=b"{}", headers={"Cookie": "ipaas_session=stale"}),
    "accepted percent-encoded id": dict(method="POST", data=b"{}", encode_id=True),
    "accepted double leading slash": dict(method="POST", data=b"{}", prefix="/"),
    "400 malformed json": dict(method="POST", data=b'{"a": '),
    "400 bad gzip": dict(method="POST", data=b"not gzip", headers={"Content-Encoding": "gzip"}),
    "400 idempotency key too long": dict(method="POST", data=b"{}", headers={"Idempotency-Key": "k" * 256}),
    "404 unknown workflow": dict(method="POST", data=b"{}", path="/api/webhooks/wf_unknown"),
    "404 trailing slash": dict(method="POST", data=b"{}", suffix="/"),
    "404 encoded slash in the id": dict(method="POST", data=b"{}", path="/api/webhooks/wf%2Fx"),
    "404 no id": dict(method="POST", data=b"{}", path="/api/webhooks/"),
    "413 Content-Length over the limit": dict(method="POST", data=b'"' + b"x" * LIMIT + b'"'),
    "413 chunked over the limit": dict(method="POST", data=b'"' + b"x" * LIMIT + b'"', chunked=True),
    "413 gzip inflating over the limit": dict(method="POST", data=gzipped_over_limit(),
                                              headers={"Content-Encoding": "gzip"}),
    "415 unknown coding": dict(method="POST", data=b"{}", headers={"Content-Encoding": "br"}),
    "415 unknown charset": dict(method="POST", data=b"hi", content_type="text/plain; charset=klingon"),
    "422 bad wait (Flask's)": dict(method="POST", data=b"{}", suffix="?wait=soon"),
    "405 GET": dict(method="GET"),
    "405 PUT": dict(method="PUT", data=b"{}"),
    "HEAD": dict(method="HEAD"),
    "OPTIONS": dict(method="OPTIONS", headers={"Origin": "http://localhost:3000",
                                               "Access-Control-Request-Method": "POST"}),
}


@pytest.mark.parametrize("case", CASES)
def test_both_paths_answer_alike(app, log_lines, hook, case):
    spec = dict(CASES[case])
    path = spec.pop("path", None) or spec.pop("prefix", "") + hook + spec.pop("suffix", "")
    if spec.pop("encode_id", False):
        path = path.replace("_", "%5F")

    thin, flask = both_paths(app, log_lines, environ(path=path, **spec))

    assert thin == flask
    expected = case.split()[0]
    assert thin.status == (202 if expected == "accepted" else int(expected) if expected.isdigit() else thin.status)
    access = [line for line in thin.lines if line[1] == "ipaas.access"]
    assert len(access) == 1 and access[0][3]["status"] == thin.status
    if expected == "accepted":
        assert access[0][0] == "debug" and access[0][4] and access[0][5]  # tenant and workflow ids


@pytest.mark.parametrize("method, suffix, through_flask", [
    ("POST", "", False),
    ("POST", "?tag=x", False),
    ("POST", "?wait=5", True),
    ("POST", "/", True),
    ("GET", "", True),
    ("HEAD", "", True),
    ("OPTIONS", "", True),
])
def test_only_plain_webhook_posts_skip_flask(app, hook, method, suffix, through_flask):
    requests = []

    def record(sender, **_):
        requests.append(sender)

    with request_started.connected_to(record, app):
        app.test_client().open(hook + suffix, method=method, json={})
    assert requests == ([app] if through_flask else [])


def test_with_tracing_on_every_webhook_goes_through_flask(store):
    from opentelemetry.sdk.trace import TracerProvider

    app = create_app({"TESTING": True, "SECRET_KEY": TEST_SECRET_KEY}, store=store, tracer_provider=TracerProvider())
    try:
        requests = []
        with request_started.connected_to(lambda sender, **_: requests.append(sender), app):
            assert app.test_client().post("/api/webhooks/wf_unknown", json={}).status_code == 404
        assert requests == [app]
    finally:
        shutdown_app(app, grace=0)


def test_both_paths_answer_a_signed_workflow_alike(app, account, log_lines):
    path = f"/api/webhooks/{add_workflow(app, account, secret=SECRET)}"
    body = b'{"a": 1}'
    for headers, status in [({}, 401), ({"X-Hub-Signature-256": sign_github(SECRET, body)}, 202)]:
        thin, flask = both_paths(app, log_lines, environ("POST", path, data=body, headers=headers))
        assert thin == flask and thin.status == status


@pytest.mark.parametrize("settings, failing, status, code", [
    ({}, None, 503, "unavailable"),  # no engine in this process
    ({"START_ENGINE": True}, "create_execution", 503, "store_unavailable"),
    ({"START_ENGINE": True, "TENANT_RATE": 0.001, "TENANT_BURST": 1}, None, 429, "rate_limited"),
])
def test_both_paths_refuse_alike(store, log_lines, settings, failing, status, code):
    app = build_app(FailingStore(store, failing, failures=None) if failing else store, **settings)
    try:
        path = f"/api/webhooks/{add_workflow(app, make_account(store))}"
        if code == "rate_limited":  # the burst's one token
            assert app.test_client().post(path, json={}).status_code == 202

        thin, flask = both_paths(app, log_lines, environ("POST", path, data=b"{}"))

        assert thin == flask
        assert (thin.status, thin.body["error"]["code"], "Retry-After" in thin.headers) == (status, code, True)
    finally:
        shutdown_app(app, grace=0)


@pytest.mark.parametrize("incoming", ["", "bad id forged", "x" * 200])
def test_both_paths_replace_an_unsafe_request_id(app, hook, incoming):
    for wsgi in (app.wsgi_app, app.wsgi_app.flask_wsgi):
        made = environ("POST", hook, data=b"{}", headers={"X-Request-ID": incoming})()
        _, status, headers = run_wsgi_app(wsgi, made, buffered=True)
        assert status.startswith("202") and re.fullmatch(r"[0-9a-f]{32}", dict(headers)["X-Request-ID"])
