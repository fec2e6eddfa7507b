"""Schemathesis against the live service: no 5xx, and every response as /openapi.json documents it.

The real service runs under gunicorn on 127.0.0.1; the `schemathesis` CLI (4.x) loads the document
from GET /openapi.json and tests every operation with an API key, in all its phases (coverage of
boundary and invalid values, random fuzzing, stateful sequences through the document's links).

Bounded and repeatable: a fixed seed, one schemathesis worker, few examples per operation, no
Hypothesis database and no schemathesis cache (nothing is written but under tmp_path).

No network but 127.0.0.1: schemathesis creates workflows whose actions point at whatever URLs it
generates ("https://0.com/") and then triggers them. The server therefore runs with a
sitecustomize module (NETWORK_GUARD) that refuses to resolve or connect to anything but loopback,
and with IPAAS_ALLOW_PRIVATE_NETWORKS=false the SSRF guard refuses loopback too: every action fails
at once without a packet leaving the machine. A failed action is an execution's outcome, not an
error of the API."""
from __future__ import annotations

import json
import os
from importlib.metadata import PackageNotFoundError, version
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serverproc import GunicornServer, run_cli

pytestmark = pytest.mark.slow

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
MAX_EXAMPLES = 20  # per operation and phase: about 20 s for the whole run on 2 cores
SEED = 1
CLI_TIMEOUT = 240  # seconds; the run takes about 20

GUARD_MESSAGE = "test network guard: only loopback may be reached"
NETWORK_GUARD = f'''"""Loaded by the test server's interpreter (PYTHONPATH): no name lookups or connections but loopback."""
import ipaddress
import socket

_MESSAGE = {GUARD_MESSAGE!r}
_LOCAL_NAMES = {{"localhost", "localhost.localdomain", "ip6-localhost"}}
_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _loopback(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower().rstrip(".") in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def getaddrinfo(host, *args, **kwargs):
    if not _loopback(host):
        raise socket.gaierror(socket.EAI_NONAME, _MESSAGE)
    return _getaddrinfo(host, *args, **kwargs)


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        raise ConnectionRefusedError(_MESSAGE)


def connect(self, address):
    _check(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
'''


def schemathesis_command(schema_url: str, api_key: str, config_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "schemathesis.cli",
        # An explicit (nearly empty) config file: a schemathesis.toml lying around is not read, and
        # the per-project cache (a .schemathesis directory in the working directory) is off.
        "--config-file", str(config_file),
        "run", schema_url,
        "--header", f"Authorization: Bearer {api_key}",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--generation-database", "none",  # no .hypothesis directory, nothing carried between runs
        "--workers", "1",  # deterministic order, and gunicorn keeps its threads for the engine
        "--request-timeout", "35",  # ?wait= may legitimately hold a webhook for up to 30 s
        "--no-color",
    ]


def cli_env() -> dict[str, str]:
    """The environment of the schemathesis process: no proxy, no schemathesis settings from outside."""
    env = {key: value for key, value in os.environ.items()
           if key.upper() not in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}
           and not key.upper().startswith("SCHEMATHESIS_")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    return env


def subprocess_run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture
def server(tmp_path: Path):
    guard_dir = tmp_path / "netguard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(NETWORK_GUARD)
    python_path = os.pathsep.join(filter(None, [str(guard_dir), os.environ.get("PYTHONPATH")]))
    env = {
        "IPAAS_ALLOW_PRIVATE_NETWORKS": "false",
        "IPAAS_MAX_ATTEMPTS": "1",  # a refused action fails at once instead of being retried
        "IPAAS_GRACEFUL_TIMEOUT": "5",
        "PYTHONPATH": python_path,
    }
    with GunicornServer(env, tmp_path) as server:
        yield server


def api_key(server: GunicornServer) -> str:
    result = run_cli(["users", "create", "schemathesis@example.com", "--tenant", "schemathesis"],
                     server.env, server.tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def seed_objects(server: GunicornServer, headers: dict[str, str]) -> None:
    """A webhook and a manual workflow with an execution each, so that ids in responses exist."""
    def create(body: dict) -> dict:
        response = server.request("POST", "/api/workflows", body, headers)
        assert response.status == 201, response.body
        return response.json()

    hook = create({"name": "schemathesis webhook", "trigger_type": "webhook", "action_type": "http_request",
                   "config": {"url": "https://example.com/hooks/{{ payload.id }}", "body": {"n": "{{ payload.n }}"}}})
    manual = create({"name": "schemathesis manual", "trigger_type": "manual", "action_type": "slack_message",
                     "config": {"webhook_url": "https://hooks.slack.com/services/T0/B0/x", "text": "{{ payload }}"}})
    assert server.request("POST", f"/api/workflows/{manual['id']}/run", {"n": 1}, headers).status == 202
    # The network guard is in place: a public destination fails at once, and the API still answers 200.
    waited = server.request("POST", f"/api/webhooks/{hook['id']}?wait=10", {"id": 1, "n": 2})
    assert waited.status == 200, waited.body
    execution = waited.json()
    assert execution["status"] == "failed" and GUARD_MESSAGE in (execution["error"] or ""), execution


def require_schemathesis_4() -> None:
    """The flags above are schemathesis 4's (3.x spelled several differently): fail clearly, never skip."""
    try:
        installed = version("schemathesis")
    except PackageNotFoundError:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    assert int(installed.split(".")[0]) == 4, f"schemathesis 4.x is required, found {installed}"


def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(server, tmp_path):
    require_schemathesis_4()
    key = api_key(server)
    seed_objects(server, {"Authorization": f"Bearer {key}"})
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text("[cache]\nenabled = false\n")
    workdir = tmp_path / "schemathesis"
    workdir.mkdir()

    started = time.monotonic()
    result = subprocess_run(schemathesis_command(server.url("/openapi.json"), key, config_file), workdir)
    elapsed = time.monotonic() - started

    output = f"schemathesis exit code {result.returncode} after {elapsed:.1f} s\n{result.stdout}\n{result.stderr}"
    print(output)
    assert result.returncode == 0, output
    # Belt and braces: the server's own access log has no 500, and nothing went unhandled.
    records = server.logs(strict=False)
    errors = [record for record in records if record.get("message") == "unhandled error"
              or (isinstance(record.get("data"), dict) and record["data"].get("status") == 500)]
    assert not errors, json.dumps(errors[:5], indent=2) + "\n" + server.log_tail()

