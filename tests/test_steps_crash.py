"""A step that succeeded is not sent again after kill -9 of the real service (gunicorn, SQLite file, real
receiver on 127.0.0.1): the restarted service resumes at the step that had not succeeded."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.receiver import Receiver, Reply, receiver  # noqa: F401  (receiver is a fixture)
from tests.serverproc import CliUser, ServerStack, create_user, wait_for_execution

pytestmark = pytest.mark.slow


@pytest.fixture
def servers(tmp_path: Path, receiver: Receiver):
    stack = ServerStack(tmp_path, {"IPAAS_ALLOW_PRIVATE_NETWORKS": "true", "IPAAS_GRACEFUL_TIMEOUT": "5",
                                   "IPAAS_RETRY_BASE_DELAY": "0.05", "IPAAS_RETRY_MAX_DELAY": "0.2"})
    yield stack
    receiver.release()
    stack.close()


@pytest.fixture
def user(tmp_path: Path) -> CliUser:
    return create_user(tmp_path, "ops@example.com", "acme")


def test_kill9_between_steps_resumes_at_the_step_that_had_not_succeeded(servers, user, receiver):
    receiver.respond("/two", Reply(hang=True))
    server = servers.start()
    steps = [{"name": name, "action_type": "http_request",
              "config": {"url": receiver.url(f"/{name}"), "timeout": 30, "body": {"execution": "{{ execution.id }}"}}}
             for name in ("one", "two")]
    created = server.request("POST", "/api/workflows", headers=user.auth,
                             body={"name": "chain", "trigger_type": "manual", "steps": steps})
    assert created.status == 201, created.body
    accepted = server.request("POST", f"/api/workflows/{created.json()['id']}/run", headers=user.auth, body={})
    execution_id = accepted.json()["execution_id"]
    receiver.wait_for(1, timeout=5, path="/two")  # step one's checkpoint is committed before step two starts

    server.kill9()
    receiver.respond("/two", Reply(503), Reply(503), Reply(200, body="done"))
    receiver.release()  # the request cut off by the crash ends; later ones get the replies above
    restarted = servers.respawn(server)
    done = wait_for_execution(restarted, user.auth, execution_id, timeout=15)

    assert done["status"] == "succeeded", done
    assert len(receiver.requests("/one")) == 1
    assert len(receiver.requests("/two")) == 4  # cut off once, then 503, 503, 200
    assert {r.headers["idempotency-key"] for r in receiver.requests("/two")} == {f"{execution_id}:two"}
    assert [(s["name"], s["status"], s["attempts"]) for s in done["steps"]] == [("one", "succeeded", 1),
                                                                               ("two", "succeeded", 3)]
