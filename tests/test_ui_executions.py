"""Dashboard execution and queue pages through the Flask test client."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from app.models import ExecutionStatus, utcnow
from tests.dashboard import HOSTILE, make_workflow, post, principal_of, record_execution, sign_in
from tests.dashboard import services, signed_in  # noqa: F401 (fixtures)
from tests.receiver import receiver  # noqa: F401 (fixture)
from tests.serverproc import wait_until


def execution_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="row-(ex_[0-9a-f]+)">', html)


def test_ui_executions_empty_list_says_what_to_do(signed_in):
    page = signed_in.get("/ui/executions").text
    assert "No executions yet." in page and "webhook URL" in page


def test_ui_executions_newest_first_filtered_and_paged(signed_in, services, account):
    one, two = make_workflow(services, account, name="one"), make_workflow(services, account, name="two")
    start = utcnow() - timedelta(minutes=10)
    made = [record_execution(services, one if i % 2 else two, when=start + timedelta(seconds=i),
                             status="failed" if i % 3 == 0 else "succeeded") for i in range(55)]
    newest_first = [e.id for e in reversed(made)]
    first = signed_in.get("/ui/executions").text
    assert execution_ids(first) == newest_first[:50] and 'hx-trigger="every 2s"' in first
    older = re.search(r'href="(/ui/executions\?cursor=[^"]+)">Older', first).group(1)
    second = signed_in.get(older.replace("&amp;", "&")).text
    assert execution_ids(second) == newest_first[50:] and "hx-trigger" not in second
    filtered = signed_in.get(f"/ui/executions?workflow_id={one.id}&status=failed").text
    assert execution_ids(filtered) == [e.id for e in reversed(made) if e.workflow_id == one.id
                                       and e.status is ExecutionStatus.FAILED]


def test_ui_executions_filter_matching_nothing_says_so(signed_in, services, account):
    record_execution(services, make_workflow(services, account))
    assert "No execution matches these filters yet." in signed_in.get("/ui/executions?status=cancelled").text


def test_ui_executions_filter_form_with_any_status_and_any_workflow_lists_all(signed_in, services, account):
    workflow = make_workflow(services, account)
    made = record_execution(services, workflow)
    for query in ("?workflow_id=&status=", f"?workflow_id={workflow.id}&status="):
        response = signed_in.get(f"/ui/executions{query}")
        assert response.status_code == 200 and execution_ids(response.text) == [made.id]


def test_ui_executions_bad_status_filter_is_refused(signed_in):
    response = signed_in.get("/ui/executions?status=exploded")
    assert response.status_code == 422 and "status must be one of" in response.text


def test_ui_executions_poll_returns_only_the_list(signed_in, services, account):
    execution = record_execution(services, make_workflow(services, account))
    response = signed_in.get("/ui/executions", headers={"HX-Request": "true"})
    assert response.text.lstrip().startswith('<div id="execution-list"') and "<html" not in response.text
    assert execution.id in response.text and "HX-Request" in response.headers["Vary"]


def test_ui_running_execution_page_refreshes_itself_and_offers_cancel(signed_in, services, account):
    execution = record_execution(services, make_workflow(services, account))
    page = signed_in.get(f"/ui/executions/{execution.id}").text
    assert f'<code id="execution-id">{execution.id}</code>' in page and "status-queued\">queued" in page
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page and 'hx-trigger="every 1s"' in page
    for label, action in (("Replay", "replay"), ("Cancel", "cancel")):
        form = re.search(r'<form method="post" action="/ui/executions/%s/%s">(.*?)</form>' % (execution.id, action),
                         page, re.S).group(1)
        assert 'name="csrf_token"' in form and f'>{label}</button>' in form


def test_ui_finished_execution_page_is_still_and_offers_only_replay(signed_in, services, account):
    execution = record_execution(services, make_workflow(services, account), status="failed")
    page = signed_in.get(f"/ui/executions/{execution.id}").text
    assert "status-failed\">failed" in page and '<pre class="code error-text">boom</pre>' in page
    assert "http-equiv" not in page and "hx-trigger" not in page
    assert ">Replay</button>" in page and ">Cancel</button>" not in page


def test_ui_execution_shows_payload_and_headers_as_text(signed_in, services, account):
    execution = record_execution(services, make_workflow(services, account), payload={"html": HOSTILE},
                                 headers={"X-Evil": HOSTILE, "Authorization": "[REDACTED]"})
    page = signed_in.get(f"/ui/executions/{execution.id}").text
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page  # the header, escaped
    assert '&#34;html&#34;: &#34;&lt;script&gt;alert(\\&#34;x\\&#34;)&lt;/script&gt;&#34;' in page  # JSON, escaped
    assert "[REDACTED]" in page


def test_ui_cancel_of_a_queued_execution(signed_in, services, account):
    execution = record_execution(services, make_workflow(services, account))
    response = post(signed_in, f"/ui/executions/{execution.id}/cancel")
    assert response.status_code == 303 and response.location == f"/ui/executions/{execution.id}"
    assert services.get_execution(principal_of(account), execution.id).status is ExecutionStatus.CANCELLED
    assert "Cancel requested" in signed_in.get(response.location).text


def test_ui_cancel_of_a_finished_execution_explains_why_not(signed_in, services, account):
    execution = record_execution(services, make_workflow(services, account), status="succeeded")
    response = post(signed_in, f"/ui/executions/{execution.id}/cancel")
    assert response.status_code == 303
    assert "already finished: succeeded" in signed_in.get(response.location).text


@pytest.mark.parametrize("action", ["cancel", "replay"])
def test_ui_execution_actions_refuse_a_missing_csrf_token(signed_in, services, account, action):
    execution = record_execution(services, make_workflow(services, account))
    assert signed_in.post(f"/ui/executions/{execution.id}/{action}").status_code == 403
    assert services.get_execution(principal_of(account), execution.id) == execution
    assert len(services.list_executions(principal_of(account), workflow_id=None, status=None, limit=5,
                                        cursor=None).items) == 1


def test_ui_queue_counts_the_last_hour_and_lists_failures(signed_in, services, account):
    workflow = make_workflow(services, account)
    record_execution(services, workflow, status="succeeded", when=utcnow() - timedelta(hours=2))
    record_execution(services, workflow, status="succeeded")
    failed = record_execution(services, workflow, status="failed")
    record_execution(services, workflow)
    page = signed_in.get("/ui/queue").text
    counts = dict(re.findall(r'href="/ui/executions\?status=([a-z_]+)">(\d+)</a>', page))
    assert counts == {"queued": "1", "running": "0", "succeeded": "1", "failed": "1", "cancelled": "0",
                      "timed_out": "0"}
    assert f"/ui/executions/{failed.id}" in page and '<span class="figure" id="queue-length">0</span>' in page


def test_ui_queue_without_failures_says_what_would_appear(signed_in):
    assert "No failed or timed-out executions." in signed_in.get("/ui/queue").text


@pytest.fixture
def engine_client(engine_app):
    """A signed-in client of an app whose thread-pool engine runs executions, and its account."""
    from tests.conftest import make_account

    account = make_account(engine_app.extensions["ipaas"].store)
    client = engine_app.test_client()
    sign_in(client, account.key)
    return client, account, engine_app.extensions["ipaas"]


def test_ui_run_now_and_replay_run_the_workflow(engine_client, receiver):
    client, account, services = engine_client
    workflow = make_workflow(services, account, config={"url": receiver.url("/hook"), "body": "{{ payload.n }}"})
    response = post(client, f"/ui/workflows/{workflow.id}/run", {"payload": '{"n": 7}'})
    assert response.status_code == 303
    first_id = response.location.rsplit("/", 1)[1]
    assert [r.body for r in receiver.wait_for(1, path="/hook")] == [b"7"]
    wait_until(lambda: services.get_execution(principal_of(account), first_id).status is ExecutionStatus.SUCCEEDED,
               5, "run did not succeed")
    response = post(client, f"/ui/executions/{first_id}/replay")
    replay_id = response.location.rsplit("/", 1)[1]
    assert response.status_code == 303 and replay_id != first_id
    receiver.wait_for(2, path="/hook")
    replayed = services.get_execution(principal_of(account), replay_id)
    assert (replayed.trigger, replayed.replay_of, replayed.payload) == ("replay", first_id, {"n": 7})
    assert f"Replay of {first_id} started." in client.get(response.location).text


def test_ui_queue_counts_stop_at_the_scan_limit_and_say_so(services, account):
    from app.overview import queue_overview

    workflow = make_workflow(services, account)
    start = utcnow() - timedelta(minutes=30)
    for i in range(250):
        record_execution(services, workflow, when=start + timedelta(milliseconds=i))
    capped = queue_overview(services.store, services.metrics, principal_of(account), now=utcnow(), scan_limit=200)
    assert capped.capped and capped.by_status["queued"] == 200
    exact = queue_overview(services.store, services.metrics, principal_of(account), now=utcnow())
    assert not exact.capped and exact.by_status["queued"] == 250
