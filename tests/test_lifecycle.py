"""Nothing accepted is lost: crashes, drains, overload, job timeouts and cancels of the real service.

Each test runs gunicorn over real sockets on a SQLite file under tmp_path. Its workflows' actions
POST {"execution": "<id>"} to a real receiver on 127.0.0.1, so deliveries are counted per execution."""
from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.receiver import Receiver, Reply, receiver  # noqa: F401  (receiver is a fixture)
from tests.serverproc import (
    CliUser,
    ServerStack,
    accept_webhook,
    create_http_workflow,
    create_user,
    delivery_counts,
    list_executions,
    query_database,
    send_webhook,
    send_webhooks_together,
    wait_for_execution,
    wait_for_executions,
    wait_until,
)

pytestmark = pytest.mark.slow

GRACE = 5  # IPAAS_GRACEFUL_TIMEOUT unless a test says otherwise: bounds every shutdown
SILENT = 30  # config.timeout of actions aimed at a hanging path: only a cancel or the job timeout ends them


@pytest.fixture
def user(tmp_path: Path) -> CliUser:
    return create_user(tmp_path, "ops@example.com", "acme")


@pytest.fixture
def servers(tmp_path: Path, receiver: Receiver):
    """Single-process servers allowed to call the receiver; all stopped at teardown."""
    stack = ServerStack(tmp_path, {"IPAAS_ALLOW_PRIVATE_NETWORKS": "true", "IPAAS_GRACEFUL_TIMEOUT": str(GRACE)})
    yield stack
    receiver.release()  # a hanging action would hold each shutdown for its whole grace period
    stack.close()


def test_kill9_loses_no_accepted_execution(servers, user, receiver):
    receiver.respond("/hook", Reply(hang=True))
    server = servers.start({"IPAAS_WORKERS": "2", "IPAAS_QUEUE_SIZE": "100"})
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"), timeout=SILENT)
    accepted = [accept_webhook(server, workflow) for _ in range(40)]
    assert len(receiver.wait_for(2, timeout=5, path="/hook")) == 2
    in_flight = set(delivery_counts(receiver))
    # The two hanging actions are recorded running within a supervisor tick (they started without a claim).
    wait_until(lambda: Counter(e["status"] for e in list_executions(server, user.auth).values())
               == {"running": 2, "queued": 38}, 5, "the two hanging actions were not recorded running")

    server.kill9()  # master and workers at once, like a power cut
    receiver.release()
    restarted = servers.respawn(server)

    # The dead worker's pid is gone from this host, so the new supervisor adopts its work at once,
    # not 30 s after its last heartbeat (the rule for another host).
    finished = wait_for_executions(restarted, user.auth, accepted, timeout=20)
    assert {i: e["status"] for i, e in finished.items()} == {i: "succeeded" for i in accepted}
    delivered = delivery_counts(receiver)
    assert set(delivered) == set(accepted)
    # At-least-once only for the two cut off mid-request; the 38 queued ones ran exactly once.
    never_started = [i for i in accepted if i not in in_flight]
    assert len(never_started) == 38
    assert {i: delivered[i] for i in never_started} == dict.fromkeys(never_started, 1)


def test_kill9_mid_storm_of_short_actions_reruns_at_most_those_in_flight(servers, user, receiver, tmp_path):
    """One-step executions run without a claim (engine/runner.py): a crash mid-storm still loses none, and
    only executions whose action was under way when the processes died are sent again."""
    receiver.respond("/hook", Reply(delay=0.01))
    processes, workers = 2, 4
    server = servers.start({"IPAAS_WORKERS": str(workers), "IPAAS_QUEUE_SIZE": "100"}, processes=processes)
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))
    accepted: list[str] = []
    crashed = threading.Event()

    def send() -> None:
        for _ in range(150):  # bounded: the crash normally ends it far sooner
            if crashed.is_set():
                return
            try:
                response = send_webhook(server, workflow, timeout=5)
            except OSError:
                return
            if response.status == 202:
                accepted.append(response.json()["execution_id"])

    senders = [threading.Thread(target=send) for _ in range(4)]
    for sender in senders:
        sender.start()
    wait_until(lambda: len(receiver.requests("/hook")) >= 150, 20, "the storm never got going")
    server.kill9()
    crashed.set()
    delivered_before = delivery_counts(receiver)
    for sender in senders:
        sender.join(10)
    restarted = servers.respawn(server)

    finished = wait_for_executions(restarted, user.auth, accepted, timeout=30)
    assert {i: e["status"] for i, e in finished.items()} == {i: "succeeded" for i in accepted}
    recorded = {row[0] for row in query_database(tmp_path, "SELECT id FROM executions")}
    wait_until(lambda: query_database(tmp_path, "SELECT COUNT(*) FROM executions WHERE status != 'succeeded'")
               == [(0,)], 20, "an execution recorded before the crash (202 unsent) never ended")
    delivered = delivery_counts(receiver)
    assert set(accepted) <= set(delivered) <= recorded
    again = [i for i, count in delivered.items() if count > 1]
    assert all(delivered[i] == 2 and i in delivered_before for i in again), again
    assert len(again) <= processes * workers  # at most the actions under way at the crash


def test_sigterm_finishes_running_work_and_hands_back_the_queue(servers, user, receiver, tmp_path):
    grace = 6  # the engine gets grace - 3 s (SHUTDOWN_MARGIN) after the requests drain
    receiver.respond("/hook", Reply(delay=1.0))
    server = servers.start({"IPAAS_WORKERS": "1", "IPAAS_GRACEFUL_TIMEOUT": str(grace)})
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))
    accepted = [accept_webhook(server, workflow) for _ in range(11)]  # 1 running, 10 queued
    [running] = receiver.wait_for(1, timeout=5, path="/hook")

    started = time.monotonic()
    assert server.terminate(timeout=grace + 5) == 0
    assert time.monotonic() - started < grace

    rows = dict(query_database(tmp_path, "SELECT id, status FROM executions"))
    unowned = {i for (i,) in query_database(tmp_path, "SELECT id FROM executions WHERE owner IS NULL")}
    assert set(rows) == set(accepted)
    assert set(rows.values()) == {"succeeded", "queued"}, rows  # nothing left running
    assert rows[running.json()["execution"]] == "succeeded"  # in flight at SIGTERM: finished in the grace period
    queued = {i for i, status in rows.items() if status == "queued"}
    assert queued <= unowned  # handed back for whichever process starts next
    delivered_at_stop = delivery_counts(receiver)

    receiver.release()  # no more delay: the rerun is quick
    restarted = servers.respawn(server)
    finished = wait_for_executions(restarted, user.auth, accepted, timeout=15)

    assert {i: e["status"] for i, e in finished.items()} == {i: "succeeded" for i in accepted}
    delivered = delivery_counts(receiver)
    assert set(delivered) == set(accepted)
    assert all(delivered[i] == 1 for i, status in rows.items() if status == "succeeded")
    twice = [i for i, count in delivered.items() if count > 1]
    # Only an execution cut off in flight may run again, and it was then handed back queued.
    assert len(twice) <= 1 and all(i in queued and delivered_at_stop[i] == 1 for i in twice)


def test_storm_answers_202_or_503_and_runs_each_accepted_webhook_once(servers, user, receiver, tmp_path):
    receiver.respond("/hook", Reply(delay=0.05))
    server = servers.start({"IPAAS_WORKERS": "2", "IPAAS_QUEUE_SIZE": "5", "IPAAS_ENQUEUE_TIMEOUT": "0.2"},
                           threads=32)
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))

    responses = send_webhooks_together(server, workflow, 300)

    answers = Counter(response.status for response in responses)
    assert set(answers) == {202, 503}, answers
    for refused in (response for response in responses if response.status == 503):
        assert refused.headers["Retry-After"].isdigit() and int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert isinstance(error["code"], str) and error["message"]
    accepted = [response.json()["execution_id"] for response in responses if response.status == 202]
    assert len(set(accepted)) == len(accepted)
    finished = wait_for_executions(server, user.auth, accepted, timeout=15)
    assert {i: e["status"] for i, e in finished.items()} == {i: "succeeded" for i in accepted}
    assert delivery_counts(receiver) == Counter(accepted)  # one request per 202, none for a 503
    assert query_database(tmp_path, "SELECT COUNT(*) FROM executions") == [(len(accepted),)]


def test_job_timeout_ends_a_hung_action_and_frees_its_worker(servers, user, receiver):
    receiver.respond("/slow", Reply(hang=True))
    server = servers.start({"IPAAS_WORKERS": "1", "IPAAS_JOB_TIMEOUT": "2"})
    slow = create_http_workflow(server, user.auth, receiver.url("/slow"), timeout=SILENT)
    fast = create_http_workflow(server, user.auth, receiver.url("/hook"))
    hung = accept_webhook(server, slow)
    receiver.wait_for(1, timeout=5, path="/slow")

    execution = wait_for_execution(server, user.auth, hung, timeout=6)

    assert execution["status"] == "timed_out"
    assert 2000 <= execution["duration_ms"] < 4000
    assert "timed out" in execution["error"]
    follower = accept_webhook(server, fast)  # the one worker thread is free again
    assert wait_for_execution(server, user.auth, follower, timeout=5)["status"] == "succeeded"


def test_cancel_stops_an_action_blocked_on_a_silent_server(servers, user, receiver):
    receiver.respond("/slow", Reply(hang=True))
    server = servers.start({"IPAAS_WORKERS": "1"})
    slow = create_http_workflow(server, user.auth, receiver.url("/slow"), timeout=SILENT)
    fast = create_http_workflow(server, user.auth, receiver.url("/hook"))
    blocked = accept_webhook(server, slow)
    receiver.wait_for(1, timeout=5, path="/slow")

    cancel = server.request("POST", f"/api/executions/{blocked}/cancel", headers=user.auth)
    answered = time.monotonic()
    execution = wait_for_execution(server, user.auth, blocked, timeout=5)

    assert cancel.status == 202, cancel.body
    assert time.monotonic() - answered < 2.0
    assert execution["status"] == "cancelled"
    assert user.user_id and user.user_id in execution["cancelled_by"]
    follower = accept_webhook(server, fast)  # the one worker thread is free again
    assert wait_for_execution(server, user.auth, follower, timeout=5)["status"] == "succeeded"


def test_webhook_wait_answers_200_with_the_finished_execution(servers, user, receiver):
    server = servers.start()
    workflow = create_http_workflow(server, user.auth, receiver.url("/hook"))

    response = send_webhook(server, workflow, "?wait=5", timeout=10)

    assert response.status == 200, response.body
    execution = response.json()
    assert execution["status"] == "succeeded"
    assert execution["result"]["status_code"] == 200
    assert delivery_counts(receiver) == Counter([execution["id"]])


def test_webhook_wait_sender_hanging_up_cancels_the_execution(servers, user, receiver):
    receiver.respond("/slow", Reply(hang=True))
    server = servers.start()
    workflow = create_http_workflow(server, user.auth, receiver.url("/slow"), timeout=SILENT)
    body = b'{"event": "order.created"}'
    request = (f"POST /api/webhooks/{workflow}?wait=10 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sender:
        sender.sendall(request)
        [recorded] = receiver.wait_for(1, timeout=5, path="/slow")  # the action runs: now hang up
    execution = wait_for_execution(server, user.auth, recorded.json()["execution"], timeout=5)

    assert execution["status"] == "cancelled"
    assert execution["cancelled_by"] == "client disconnected"
