"""The service as deployed: gunicorn.conf.py + wsgi.py, real processes, real sockets, JSON logs."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.receiver import Reply, receiver  # noqa: F401  (receiver is a fixture)
from tests.serverproc import ROOT, GunicornServer, run_cli, service_env, wait_until

pytestmark = pytest.mark.slow

GRACE = 5  # IPAAS_GRACEFUL_TIMEOUT of these servers: bounds every shutdown below


@pytest.fixture
def start_server(tmp_path: Path):
    """Start GunicornServer(env, tmp_path, ...) instances; every one is stopped at teardown."""
    servers: list[GunicornServer] = []

    def start(env: dict[str, str | None] | None = None, **kwargs) -> GunicornServer:
        server = GunicornServer({"IPAAS_GRACEFUL_TIMEOUT": str(GRACE), **(env or {})}, tmp_path, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


def test_gunicorn_healthz_answers_json_over_a_socket(start_server):
    server = start_server()

    response = server.request("GET", "/healthz")

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert isinstance(response.json(), dict)


def test_gunicorn_every_log_line_is_json_with_the_contract_fields(start_server):
    server = start_server(processes=2)
    server.request("GET", "/healthz")
    server.request("GET", "/no/such/path")

    assert server.terminate(timeout=GRACE + 5) == 0

    records = server.logs()  # raises on any line that is not a JSON object
    for record in records:
        assert {"timestamp", "level", "message", "service"} <= record.keys(), record
        assert record["service"] == "ipaas-api"
    messages = [record["message"] for record in records]
    assert any(message.startswith("Listening at") for message in messages)
    assert sum(message.startswith("Booting worker") for message in messages) == 2
    assert any(message.startswith("Shutting down") for message in messages)


def test_gunicorn_access_line_carries_the_request_id_and_no_secret(start_server):
    server = start_server()
    key = "ipaas_test_not_a_real_key_0123456789"

    response = server.request("GET", "/api/workflows",
                              headers={"X-Request-ID": "abc-123", "Authorization": f"Bearer {key}"})

    assert response.status == 401
    line = server.wait_for_log(lambda record: record.get("request_id") == "abc-123"
                               and "duration_ms" in (record.get("data") or {}))
    fields = {**line, **line["data"]}
    assert line["data"]["status"] == 401
    assert isinstance(line["data"]["duration_ms"], (int, float)) and line["data"]["duration_ms"] >= 0
    assert fields["method"] == "GET" and fields["path"] == "/api/workflows"
    assert line["service"] == "ipaas-api"
    assert all(key not in raw for raw in server.raw_logs())


def test_gunicorn_sigterm_exits_zero_within_the_grace_period(start_server):
    server = start_server(processes=2)
    workers = wait_until(lambda: len(server.worker_pids()) == 2 and server.worker_pids(), 5, "2 workers")
    server.request("GET", "/healthz")

    started = time.monotonic()
    code = server.terminate(timeout=GRACE + 5)

    assert code == 0
    assert time.monotonic() - started < GRACE
    assert server.group_pids() == []
    raw = "\n".join(server.raw_logs())
    assert "Traceback" not in raw
    records = server.logs()
    assert not [r for r in records if r.get("exc_info") or r["level"] in ("error", "critical")]
    exited = {r["message"] for r in records if r["message"].startswith("Worker exiting")}
    assert exited == {f"Worker exiting (pid: {pid})" for pid in workers}


def test_gunicorn_unknown_path_is_a_json_404(start_server):
    server = start_server()

    response = server.request("GET", "/definitely/not/here")

    assert response.status == 404
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


def raw_exchange(server: GunicornServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection and read the whole answer (the server closes after an error)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n", 431,
     "request_header_fields_too_large"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431, "request_header_fields_too_large"),
    (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_request"),
])
def test_gunicorn_own_error_responses_are_json(start_server, request_bytes, status, code):
    server = start_server()

    answer_status, headers, body = raw_exchange(server, request_bytes)

    assert answer_status == status
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]
    assert server.request("GET", "/healthz").status == 200  # the worker lives on


def chunked_post(path: str, chunks: list[bytes]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            f"X-Request-ID: chunked-1\r\nConnection: close\r\n\r\n").encode() + body


def test_gunicorn_chunked_webhook_bodies_are_read_whole_and_bounded(start_server, tmp_path):
    created = run_cli(["users", "create", "ops@example.com", "--tenant", "acme"], None, tmp_path)
    auth = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    server = start_server({"IPAAS_MAX_PAYLOAD_BYTES": "1000"})
    workflow = server.request("POST", "/api/workflows", headers=auth, body={
        "name": "hook", "trigger_type": "webhook", "action_type": "http_request",
        "config": {"url": "http://127.0.0.1:9/", "timeout": 0.2}})
    path = f"/api/webhooks/{workflow.json()['id']}"

    status, headers, body = raw_exchange(server, chunked_post(path, [b"a" * 600, b"b" * 400]))
    assert (status, headers["x-request-id"]) == (202, "chunked-1")
    execution = server.request("GET", f"/api/executions/{json.loads(body)['execution_id']}", headers=auth).json()
    assert execution["payload"] == "a" * 600 + "b" * 400

    status, headers, body = raw_exchange(server, chunked_post(path, [b"a" * 600, b"b" * 401]))
    assert (status, json.loads(body)["error"]["code"]) == (413, "payload_too_large")
    assert server.request("GET", "/healthz").status == 200  # the worker lives on


def start_forwarding(start_server, tmp_path, receiver, **kwargs):
    """Start a server with a user and a manual workflow POSTing {"user": payload.user} to the receiver."""
    created = run_cli(["users", "create", "ops@example.com", "--tenant", "acme"], None, tmp_path)
    assert created.returncode == 0, created.stderr
    auth = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    server = start_server({"IPAAS_ALLOW_PRIVATE_NETWORKS": "true"}, **kwargs)
    workflow = server.request("POST", "/api/workflows", headers=auth, body={
        "name": "forward", "trigger_type": "manual", "action_type": "http_request",
        "config": {"url": receiver.url("/hook"), "body": {"user": "{{ payload.user }}"}}})
    assert workflow.status == 201, workflow.body
    return server, auth, f"/api/workflows/{workflow.json()['id']}/run"


def finished(server, auth, execution_id):
    path = f"/api/executions/{execution_id}"
    return wait_until(lambda: (e := server.request("GET", path, headers=auth).json())["status"]
                      not in ("queued", "running") and e, 5, "the execution to finish")


def test_gunicorn_workers_run_executions(start_server, tmp_path, receiver):
    server, auth, run_path = start_forwarding(start_server, tmp_path, receiver, processes=2)

    run = server.request("POST", run_path, headers=auth, body={"user": "ada"})

    assert run.status == 202, run.body
    assert finished(server, auth, run.json()["execution_id"])["status"] == "succeeded"
    assert [r.json() for r in receiver.requests("/hook")] == [{"user": "ada"}]


def test_gunicorn_sigterm_lets_a_running_execution_finish(start_server, tmp_path, receiver):
    server, auth, run_path = start_forwarding(start_server, tmp_path, receiver)
    receiver.respond("/hook", Reply(delay=1.0))  # the engine gets GRACE - 3 s (SHUTDOWN_MARGIN) to finish it
    execution_id = server.request("POST", run_path, headers=auth, body={"user": "ada"}).json()["execution_id"]
    receiver.wait_for(1, timeout=5)

    assert server.terminate(timeout=GRACE + 5) == 0

    assert "Traceback" not in "\n".join(server.raw_logs())
    with server.respawn() as restarted:
        assert finished(restarted, auth, execution_id)["status"] == "succeeded"
    assert len(receiver.requests("/hook")) == 1  # ran once: not handed back and run again


def test_gunicorn_metrics_directory_is_emptied_then_per_worker(start_server, tmp_path):
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_999999.db").write_bytes(b"stale run")

    server = start_server(processes=2)
    workers = wait_until(lambda: len(server.worker_pids()) == 2 and server.worker_pids(), 5, "2 workers")

    assert not (prom / "counter_999999.db").exists()
    # Each worker wrote its own files: prometheus_client is in multiprocess mode in the workers.
    wait_until(lambda: all(list(prom.glob(f"*_{pid}.db")) for pid in workers), 5, "a .db file per worker")
    response = server.request("GET", "/metrics")
    assert response.status == 200
    assert b"ipaas_queue_length" in response.body

    # A dead worker's live gauges are removed (child_exit); the master forks a replacement.
    os.kill(workers[0], signal.SIGKILL)
    wait_until(lambda: not list(prom.glob(f"gauge_livesum_{workers[0]}.db")), 5, "livesum files removed")
    wait_until(lambda: len(server.worker_pids()) == 2, 5, "a replacement worker")


def test_gunicorn_default_metrics_directory_is_used_then_removed(start_server, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    server = start_server({"PROMETHEUS_MULTIPROC_DIR": None, "TMPDIR": str(scratch)})

    [directory] = scratch.glob("ipaas-prom-*")
    # Empty unless the workers' prometheus_client runs in multiprocess mode, writing to that directory.
    assert b"ipaas_queue_length" in server.request("GET", "/metrics").body
    assert server.terminate(timeout=GRACE + 5) == 0
    assert not directory.exists()


def test_gunicorn_workers_exit_when_the_master_is_killed(start_server):
    server = start_server(processes=2)
    workers = wait_until(lambda: len(server.worker_pids()) == 2 and server.worker_pids(), 5, "2 workers")

    os.kill(server.master_pid, signal.SIGKILL)
    server.proc.wait(5)

    # Each worker notices its parent changed within a second, drains, runs worker_exit, and exits.
    wait_until(lambda: not server.group_pids(), GRACE, f"orphaned workers {workers} still alive")
    records = server.logs(strict=False)  # a SIGKILLed master may leave half a line
    assert sum(r["message"].startswith("Parent changed, shutting down") for r in records) == 2


def test_gunicorn_with_reuse_port_refuses_a_port_another_server_listens_on(start_server, tmp_path):
    first = start_server({"IPAAS_REUSE_PORT": "true"}, processes=2)
    assert first.listening_sockets() == 2  # a socket per worker

    # Its workers could bind beside the first server's and take a share of its connections unnoticed.
    env = service_env(tmp_path, {"IPAAS_REUSE_PORT": "true", "IPAAS_BIND": f"127.0.0.1:{first.port}"})
    second = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                              env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = second.communicate(timeout=20)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()

    assert second.returncode == 1
    assert f"Error: 127.0.0.1:{first.port} is already in use" in stderr
    assert first.listening_sockets() == 2
    assert first.request("GET", "/healthz").status == 200
