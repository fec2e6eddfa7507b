"""Tracing with an in-memory exporter: one trace per execution, the traceparent sent on, ids in the logs."""
from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id

from app import create_app, shutdown_app
from app.models import Execution, ExecutionStatus, new_id, utcnow
from app.store import MemoryStore
from app.tracing import provider_from_env
from tests.conftest import TEST_SECRET_KEY, make_account
from tests.receiver import receiver  # noqa: F401 (a fixture)
from tests.serverproc import (GunicornServer, accept_webhook, create_http_workflow, create_user,
                              wait_for_execution, wait_until)
from tests.test_webhooks_api import make_workflow, wait_status

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced_app(exporter: InMemorySpanExporter | None, store=None):
    provider = None
    if exporter is not None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return create_app({"TESTING": True, "ALLOW_PRIVATE_NETWORKS": True, "LOG_LEVEL": "INFO",
                       "SECRET_KEY": TEST_SECRET_KEY, "START_ENGINE": True, "WORKERS": 2,
                       "RETRY_BASE_DELAY": 0.01, "SUPERVISOR_TICK": 0.02, "RECOVER_INTERVAL": 0.05},
                      store=store or MemoryStore(), tracer_provider=provider)


@pytest.fixture
def app(exporter):
    app = traced_app(exporter)
    yield app
    shutdown_app(app, grace=5)


@pytest.fixture
def log_level() -> int:
    return logging.DEBUG  # an execution's lines other than its outcome are at debug


def send(client, workflow_id, **headers):
    response = client.post(f"/api/webhooks/{workflow_id}", json={"user": {"name": "Bo"}}, headers=headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["execution_id"]


def test_tracing_one_trace_from_the_webhook_to_the_destination(client, account, receiver, exporter):
    workflow = make_workflow(client, account, receiver.url("/hook"))

    execution = wait_status(client, account, send(client, workflow["id"], traceparent=INCOMING))

    assert execution["status"] == "succeeded"
    sent = receiver.requests("/hook")[0].headers["traceparent"]
    assert sent.split("-")[1] == INCOMING_TRACE and sent.endswith("-01")
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert {"queue wait", "execution", "attempt", "POST"} <= spans.keys()
    request = next(span for span in exporter.get_finished_spans()
                   if span.kind is SpanKind.SERVER and "webhooks" in span.name)
    assert request.parent.span_id == int(INCOMING.split("-")[2], 16)
    ours = [span for span in exporter.get_finished_spans() if span.name in ("queue wait", "execution", "attempt",
                                                                             "POST") or span is request]
    assert {format_trace_id(span.context.trace_id) for span in ours} == {INCOMING_TRACE}
    assert spans["execution"].parent.span_id == request.context.span_id
    assert spans["POST"].parent.span_id == spans["attempt"].context.span_id
    assert sent.split("-")[2] == format(spans["POST"].context.span_id, "016x")
    assert spans["execution"].attributes["ipaas.execution.status"] == "succeeded"
    assert spans["POST"].attributes["http.response.status_code"] == 200
    assert "url.full" not in spans["POST"].attributes


def test_tracing_without_an_incoming_traceparent_starts_one_trace(client, account, receiver, exporter):
    workflow = make_workflow(client, account, receiver.url("/hook"))

    execution_id = send(client, workflow["id"])
    wait_status(client, account, execution_id)

    stored = client.application.extensions["ipaas"].store.get_execution(None, execution_id).trace_context
    trace_id = stored.split("-")[1]
    assert receiver.requests("/hook")[0].headers["traceparent"].split("-")[1] == trace_id
    in_trace = {span.name for span in exporter.get_finished_spans() if format_trace_id(span.context.trace_id) == trace_id}
    assert in_trace == {"POST /api/webhooks/<workflow_id>", "queue wait", "execution", "step main", "attempt", "POST"}
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["step main"].parent.span_id == spans["execution"].context.span_id
    assert spans["attempt"].parent.span_id == spans["step main"].context.span_id


def test_tracing_unsampled_request_still_propagates_its_trace_id(client, account, receiver, exporter):
    workflow = make_workflow(client, account, receiver.url("/hook"))
    unsampled = INCOMING[:-2] + "00"

    wait_status(client, account, send(client, workflow["id"], traceparent=unsampled))

    sent = receiver.requests("/hook")[0].headers["traceparent"]
    assert sent.split("-")[1] == INCOMING_TRACE and sent.endswith("-00")
    assert not [span for span in exporter.get_finished_spans() if span.name == "execution"]


def test_tracing_log_lines_carry_the_trace_and_span_ids(client, account, receiver, log_lines):
    workflow = make_workflow(client, account, receiver.url("/hook"))

    execution_id = send(client, workflow["id"], traceparent=INCOMING)
    wait_status(client, account, execution_id)

    lines = [line for line in log_lines() if line.get("execution_id") == execution_id]
    messages = {line["message"] for line in lines}
    assert {"execution accepted", "execution started", "execution succeeded"} <= messages
    assert all(line["trace_id"] == INCOMING_TRACE and len(line["span_id"]) == 16 for line in lines)
    access = [line for line in log_lines() if line["message"] == "request" and "webhooks" in line["data"]["path"]]
    assert access and all(line["trace_id"] == INCOMING_TRACE for line in access)


def test_tracing_recovered_execution_continues_its_stored_trace(exporter, receiver):
    store = MemoryStore()
    store.init_schema()
    setup = traced_app(None, store)  # a first process that accepted it, then died before running it
    account = make_account(store)
    workflow = make_workflow(setup.test_client(), account, receiver.url("/hook"))
    shutdown_app(setup, grace=0)
    now = utcnow()
    orphan = Execution(id=new_id("ex", now), tenant_id=account.tenant_id, workflow_id=workflow["id"],
                       status=ExecutionStatus.QUEUED, trigger="webhook", payload={}, created_at=now,
                       owner=None, trace_context=INCOMING)
    store.create_execution(orphan)

    app = traced_app(exporter, store)  # the process that adopts it
    try:
        finished = wait_status(app.test_client(), account, orphan.id)
    finally:
        shutdown_app(app, grace=5)

    assert finished["status"] == "succeeded"
    assert receiver.requests("/hook")[0].headers["traceparent"].split("-")[1] == INCOMING_TRACE
    execution_span = next(span for span in exporter.get_finished_spans() if span.name == "execution")
    assert format_trace_id(execution_span.context.trace_id) == INCOMING_TRACE
    assert execution_span.parent.span_id == int(INCOMING.split("-")[2], 16)


def test_tracing_off_sends_no_traceparent_and_stores_none(receiver):
    app = traced_app(None)
    try:
        client, account = app.test_client(), make_account(app.extensions["ipaas"].store)
        workflow = make_workflow(client, account, receiver.url("/hook"))
        execution_id = send(client, workflow["id"], traceparent=INCOMING)
        wait_status(client, account, execution_id)
        assert app.extensions["ipaas"].store.get_execution(None, execution_id).trace_context is None
    finally:
        shutdown_app(app, grace=5)

    assert "traceparent" not in receiver.requests("/hook")[0].headers


@pytest.mark.parametrize("environ, on", [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
])
def test_tracing_is_on_only_when_an_exporter_is_configured(environ, on):
    provider = provider_from_env(environ)
    try:
        assert (provider is not None) is on
    finally:
        if provider is not None:
            provider.shutdown()


def test_tracing_unknown_exporter_is_refused():
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        provider_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


@pytest.mark.slow
def test_tracing_under_gunicorn_sends_the_senders_trace_to_the_destination(tmp_path, receiver):
    user = create_user(tmp_path, "ops@example.com", "acme")
    env = {"IPAAS_ALLOW_PRIVATE_NETWORKS": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url("").rstrip("/"),
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with GunicornServer(env, tmp_path, processes=2) as server:
        workflow_id = create_http_workflow(server, user.auth, receiver.url("/hook"))

        execution_id = accept_webhook(server, workflow_id, headers={"traceparent": INCOMING})
        assert wait_for_execution(server, user.auth, execution_id)["status"] == "succeeded"

        assert receiver.requests("/hook")[0].headers["traceparent"].split("-")[1] == INCOMING_TRACE
        exported = receiver.wait_for(1, timeout=10, path="/v1/traces")  # OTLP over HTTP, to the same receiver
        assert exported[0].headers["content-type"] == "application/x-protobuf"
        wait_until(lambda: bytes.fromhex(INCOMING_TRACE) in b"".join(r.body for r in receiver.requests("/v1/traces")),
                   10, "the sender's trace to be exported")  # batches come every 100 ms, in any order
        lines = [line for line in server.logs() if line.get("execution_id") == execution_id]
        assert lines and all(line["trace_id"] == INCOMING_TRACE for line in lines)
