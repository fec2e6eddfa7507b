"""`flask --app wsgi webhooks send`: a sender's tool, tried against the real service under gunicorn."""
from __future__ import annotations

import base64
import json

import pytest

from tests.receiver import Receiver
from tests.serverproc import GunicornServer, create_user, free_port, run_cli, wait_for_execution

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One server for the module: a signed and an unsigned workflow posting to a receiver."""
    tmp_path = tmp_path_factory.mktemp("sender")
    user = create_user(tmp_path, "ops@example.com", "acme")
    with Receiver() as receiver, GunicornServer({"IPAAS_ALLOW_PRIVATE_NETWORKS": "true"}, tmp_path) as server:
        ids = {}
        for name, secret in (("signed", SECRET), ("open", None)):
            response = server.request("POST", "/api/workflows", headers=user.auth, body={
                "name": name, "trigger_type": "webhook", "action_type": "http_request", "secret": secret,
                "config": {"url": receiver.url("/hook"), "body": {"got": "{{ payload.n }}"}}})
            assert response.status == 201, response.body
            ids[name] = response.json()["id"]
        yield server, user, receiver, ids, tmp_path


def send(service, *args: str):
    server, _, _, _, tmp_path = service
    return run_cli(["webhooks", "send", *args, "--url", server.url()], None, tmp_path)


def test_sender_signs_with_the_secret_and_the_execution_runs(service):
    server, user, receiver, ids, _ = service

    result = send(service, ids["signed"], "--data", '{"n": 7}', "--secret", SECRET)

    assert result.returncode == 0, result.stderr
    status_line, body = result.stdout.splitlines()[:2]
    assert status_line.startswith("202")
    execution = wait_for_execution(server, user.auth, json.loads(body)["execution_id"])
    assert execution["status"] == "succeeded" and execution["payload"] == {"n": 7}
    assert execution["headers"]["webhook-id"].startswith("msg_")


def test_sender_sends_a_file_as_it_is(service, tmp_path):
    server, user, _, ids, _ = service
    event = tmp_path / "event.json"
    event.write_bytes(b'{"n": "from a file"}')

    result = send(service, ids["open"], "--file", str(event))

    assert result.returncode == 0, result.stderr
    execution_id = json.loads(result.stdout.splitlines()[1])["execution_id"]
    assert wait_for_execution(server, user.auth, execution_id)["payload"] == {"n": "from a file"}


@pytest.mark.parametrize("args, status", [
    (["signed"], "401"),  # no secret given: unsigned
    (["signed", "--secret", "whsec_" + base64.b64encode(b"x" * 32).decode()], "401"),  # the wrong one
    (["wf_0000000000000000000000000000"], "404"),
])
def test_sender_exits_non_zero_on_a_refusal_and_prints_it(service, args, status):
    _, _, _, ids, _ = service
    workflow = ids.get(args[0], args[0])

    result = send(service, workflow, *args[1:])

    assert result.returncode == 1
    status_line, body = result.stdout.splitlines()[:2]
    assert status_line.startswith(status)
    assert json.loads(body)["error"]["code"]


@pytest.mark.parametrize("args, message", [
    (["--data", "{not json"], "--data must be JSON"),
    (["--data", "{}", "--file", __file__], "not both"),
])
def test_sender_refuses_bad_arguments(service, args, message):
    _, _, _, ids, _ = service

    result = send(service, ids["open"], *args)

    assert result.returncode == 2 and message in result.stderr


def test_sender_says_when_nothing_answers(tmp_path):
    result = run_cli(["webhooks", "send", "wf_x", "--url", f"http://127.0.0.1:{free_port()}"], None, tmp_path)

    assert result.returncode == 1 and "no answer from" in result.stderr
