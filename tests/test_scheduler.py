"""The scheduler with an injected clock: due slots fire once, missed ones do not pile up, edits and
disabling take effect, and two processes' schedulers on one SQLite file record each slot once."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Iterator

import pytest

from app import schedules, shutdown_app
from app.engine.scheduler import Scheduler
from app.models import utcnow
from app.store import SqliteStore
from tests.conftest import Account, build_app, make_account
from tests.receiver import receiver  # noqa: F401 (a fixture)
from tests.serverproc import GunicornServer, create_user, list_executions, wait_until
from tests.smtpserver import SmtpServer

# The apps' own scheduler threads never tick during a test: each test drives its own Scheduler.
QUIET = dict(START_ENGINE=True, WORKERS=2, QUEUE_SIZE=10, SCHEDULER_TICK=3600.0)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def app(tmp_path) -> Iterator:
    app = build_app(SqliteStore(str(tmp_path / "ipaas.sqlite3")), **QUIET)
    yield app
    shutdown_app(app, grace=5)


@pytest.fixture
def account(app) -> Account:
    return make_account(app.extensions["ipaas"].store)


def scheduler_for(app, clock: Clock) -> Scheduler:
    services = app.extensions["ipaas"]
    return Scheduler(services.store, services.engine, clock=clock)


def create(app, account, receiver, cron: str = "*/5 * * * *", **fields) -> dict:
    body = {"name": "report", "trigger_type": "schedule", "schedule": {"cron": cron}, "action_type": "http_request",
            "config": {"url": receiver.url("/report"), "body": {"at": "{{ payload.scheduled_at }}"}}, **fields}
    response = app.test_client().post("/api/workflows", json=body, headers=account.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def next_slot(workflow: dict, after: datetime | None = None) -> datetime:
    return schedules.Schedule(**workflow["schedule"]).next_after(after or utcnow())


def executions(app, account, workflow_id: str) -> list[dict]:
    response = app.test_client().get(f"/api/executions?workflow_id={workflow_id}", headers=account.headers)
    return response.get_json()["items"]


def test_a_due_slot_fires_once_with_its_time_as_payload(app, account, receiver):
    workflow = create(app, account, receiver)
    slot = next_slot(workflow)
    clock = Clock(slot - timedelta(seconds=1))
    scheduler = scheduler_for(app, clock)
    assert scheduler.tick() == []  # not due yet
    clock.now = slot + timedelta(seconds=1)
    fired = scheduler.tick()
    assert len(fired) == 1 and fired[0].trigger == "schedule"
    at = schedules.scheduled_at(slot)
    assert fired[0].payload == {"scheduled_at": at} and at.endswith(":00Z")
    assert receiver.wait_for(1, path="/report")[0].json() == {"at": at}
    clock.now = slot + timedelta(seconds=50)
    assert scheduler.tick() == []
    assert scheduler_for(app, clock).tick() == []  # a fresh scheduler (a restart) does not fire it again
    finished = wait_until(lambda: [e for e in executions(app, account, workflow["id"]) if e["status"] == "succeeded"],
                          10, "the scheduled execution to succeed")
    assert [e["trigger"] for e in finished] == ["schedule"]


def test_two_processes_record_a_slot_once(app, account, receiver, tmp_path):
    other = build_app(SqliteStore(str(tmp_path / "ipaas.sqlite3")), **QUIET)  # a second process's app
    try:
        workflow = create(app, account, receiver)
        clock = Clock(next_slot(workflow) + timedelta(seconds=1))
        first, second = scheduler_for(app, clock), scheduler_for(other, clock)
        assert len(first.tick()) + len(second.tick()) == 1
        assert first.tick() == [] and second.tick() == []
        assert len(executions(app, account, workflow["id"])) == 1
    finally:
        shutdown_app(other, grace=5)


def test_after_downtime_only_the_most_recent_missed_slot_fires(app, account, receiver):
    workflow = create(app, account, receiver)
    first = next_slot(workflow)
    latest = first + timedelta(minutes=15)  # four slots missed: first, +5, +10, +15
    fired = scheduler_for(app, Clock(latest + timedelta(minutes=2))).tick()
    assert [e.payload["scheduled_at"] for e in fired] == [schedules.scheduled_at(latest)]


def test_a_slot_from_before_the_schedule_existed_never_fires(app, account, receiver):
    workflow = create(app, account, receiver, cron="0 0 1 1 *")  # the latest slot is months old
    assert scheduler_for(app, Clock(utcnow())).tick() == []


def test_disabling_stops_the_schedule_and_enabling_starts_at_the_next_slot(app, account, receiver):
    client = app.test_client()
    workflow = create(app, account, receiver)
    slot = next_slot(workflow)
    client.patch(f"/api/workflows/{workflow['id']}", json={"enabled": False}, headers=account.headers)
    shown = client.get(f"/api/workflows/{workflow['id']}", headers=account.headers).get_json()
    assert shown["next_run_at"] is None
    scheduler = scheduler_for(app, Clock(slot + timedelta(seconds=1)))
    assert scheduler.tick() == []
    # Enabled again after that slot passed (as the clock says): the missed slot stays unfired.
    client.patch(f"/api/workflows/{workflow['id']}", json={"enabled": True}, headers=account.headers)
    assert scheduler_for(app, Clock(utcnow() + timedelta(seconds=1))).tick() == []
    later = next_slot(workflow, utcnow())
    assert len(scheduler_for(app, Clock(later + timedelta(seconds=1))).tick()) == 1


def test_editing_the_cron_takes_effect_at_the_next_slot(app, account, receiver):
    client = app.test_client()
    workflow = create(app, account, receiver, cron="0 0 * * *")
    response = client.patch(f"/api/workflows/{workflow['id']}", json={"schedule": {"cron": "*/5 * * * *"}},
                            headers=account.headers)
    edited = response.get_json()
    slot = next_slot(edited)
    assert edited["next_run_at"] == schedules.scheduled_at(slot).replace("Z", ".000Z")
    fired = scheduler_for(app, Clock(slot + timedelta(seconds=1))).tick()
    assert [e.payload["scheduled_at"] for e in fired] == [schedules.scheduled_at(slot)]


def test_other_edits_keep_a_due_slot(app, account, receiver):
    workflow = create(app, account, receiver)
    slot = next_slot(workflow)
    app.test_client().patch(f"/api/workflows/{workflow['id']}", json={"name": "renamed"}, headers=account.headers)
    # The rename happened before the slot by the real clock; had it come just after, the slot still fires:
    assert len(scheduler_for(app, Clock(slot + timedelta(seconds=1))).tick()) == 1


def test_a_deleted_workflow_no_longer_fires(app, account, receiver):
    workflow = create(app, account, receiver)
    app.test_client().delete(f"/api/workflows/{workflow['id']}", headers=account.headers)
    assert scheduler_for(app, Clock(next_slot(workflow) + timedelta(seconds=1))).tick() == []


def test_a_scheduled_workflow_emails_a_report(app, account):
    client = app.test_client()
    with SmtpServer(users={"reports": "smtp-pw-77"}) as smtp:
        credential = client.post("/api/credentials", headers=account.headers, json={
            "name": "mail", "type": "smtp", "data": {"host": "127.0.0.1", "port": smtp.port, "security": "none",
                                                     "from": "reports@example.com", "username": "reports",
                                                     "password": "smtp-pw-77"}}).get_json()
        workflow = client.post("/api/workflows", headers=account.headers, json={
            "name": "daily report", "trigger_type": "schedule",
            "schedule": {"cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"},
            "steps": [{"name": "main", "action_type": "email", "credential_id": credential["id"],
                       "config": {"to": "team@example.com", "subject": "Report for {{ payload.scheduled_at }}",
                                  "text": "Good morning"}}]}).get_json()
        slot = next_slot(workflow)
        assert workflow["next_run_at"] == schedules.scheduled_at(slot).replace("Z", ".000Z")
        [execution] = scheduler_for(app, Clock(slot + timedelta(seconds=1))).tick()
        message = smtp.wait_for(1)[0].message
    assert message["Subject"] == f"Report for {schedules.scheduled_at(slot)}"
    done = wait_until(lambda: [e for e in executions(app, account, workflow["id"]) if e["status"] == "succeeded"],
                      10, "the report to be sent")
    assert done[0]["id"] == execution.id and "smtp-pw-77" not in str(done[0])


@pytest.mark.slow
def test_two_gunicorn_processes_run_a_due_slot_once(tmp_path, receiver):
    """Real processes on one SQLite file race for each slot. Their scheduler clocks run 120 s ahead
    (a test-only knob), so an every-minute slot is due as soon as the workflow exists: nothing waits
    for a real minute boundary, and each process sees the slot due in every 0.2 s round."""
    user = create_user(tmp_path, "ann@acme.test", "acme")
    env = {"IPAAS_SCHEDULER_CLOCK_OFFSET": "120", "IPAAS_SCHEDULER_TICK": "0.2", "IPAAS_ALLOW_PRIVATE_NETWORKS": "true"}
    with GunicornServer(env, tmp_path, processes=2) as server:
        created = server.request("POST", "/api/workflows", headers=user.auth, body={
            "name": "tick", "trigger_type": "schedule", "schedule": {"cron": "* * * * *"},
            "action_type": "http_request",
            "config": {"url": receiver.url("/tick"), "body": {"at": "{{ payload.scheduled_at }}"}}})
        assert created.status == 201
        fired = server.wait_for_log(lambda r: r.get("message") == "schedule fired", timeout=10)
        lost = server.wait_for_log(lambda r: r.get("message") == "schedule slot already fired", timeout=10)
        # Both processes saw the slot due; one recorded it.
        assert fired["data"]["slot"] == lost["data"]["slot"] and fired["data"]["worker"] != lost["data"]["worker"]
        receiver.wait_for(1, path="/tick")
        found = wait_until(lambda: [e for e in list_executions(server, user.auth).values()
                                    if e["status"] == "succeeded"], 10, "the slot's execution to succeed")
    slots = Counter(e["payload"]["scheduled_at"] for e in found)
    assert slots and set(slots.values()) == {1}  # (a real minute boundary may add a second slot, once)
    assert Counter(r.json()["at"] for r in receiver.requests("/tick")) == slots
