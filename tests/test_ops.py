"""Operations endpoints on a single process: health, readiness, metrics."""
from __future__ import annotations

import re

import pytest

from app import shutdown_app
from tests.conftest import build_app, make_account
from tests.fakes import FailingStore
from tests.receiver import receiver  # noqa: F401 (a fixture)
from tests.test_webhooks_api import make_workflow, wait_status


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? ([0-9.e+-]+)$" if labels else rf"^{re.escape(name)} ([0-9.e+-]+)$"
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            return float(match.groups()[-1])
    raise AssertionError(f"{name}{labels} not in metrics")


def test_healthz_is_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_without_an_engine_is_503(client):
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["checks"]["engine"] != "ok"


def test_readyz_with_engine_is_ready(engine_app):
    response = engine_app.test_client().get("/readyz")
    assert response.status_code == 200 and response.get_json()["status"] == "ready"


def test_readyz_reports_an_unreachable_store(engine_app):
    services = engine_app.extensions["ipaas"]
    services.store, real = FailingStore(services.store, "ping", failures=None, message="disk I/O error"), services.store
    try:
        response = engine_app.test_client().get("/readyz")
        assert response.status_code == 503 and "unreachable" in response.get_json()["checks"]["store"]
    finally:
        services.store = real


def test_metrics_count_webhooks_and_executions(engine_app, receiver):
    client = engine_app.test_client()
    account = make_account(engine_app.extensions["ipaas"].store)
    wf = make_workflow(client, account, receiver.url("/hook"))
    ids = [client.post(f"/api/webhooks/{wf['id']}", json={}).get_json()["execution_id"] for _ in range(3)]
    assert client.post("/api/webhooks/wf_unknown", json={}).status_code == 404
    for execution_id in ids:
        wait_status(client, account, execution_id)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert sample(text, "ipaas_webhooks_received_total", status="202") == 3
    assert sample(text, "ipaas_webhooks_received_total", status="404") == 1
    assert sample(text, "ipaas_executions_total", action_type="http_request", status="succeeded") == 3
    assert sample(text, "ipaas_execution_duration_seconds_count", action_type="http_request") == 3
    assert sample(text, "ipaas_webhook_ack_seconds_count") == 4
    assert sample(text, "ipaas_queue_length") == 0 and sample(text, "ipaas_workers_busy") == 0
    for name in ("ipaas_jobs_dropped_total", "ipaas_rate_limited_total"):
        assert sample(text, name) == 0


@pytest.mark.parametrize("setting", [{"WORKERS": "ten"}, {"JOB_TIMEOUT": "soon"}])
def test_bad_numeric_setting_fails_at_start_naming_the_variable(store, setting):
    with pytest.raises(ValueError, match=f"IPAAS_{next(iter(setting))}"):
        shutdown_app(build_app(store, **setting), grace=0)
